// Input shape and output names of an ONNX file, read without an ONNX library.
#ifndef SSD_INFER_ONNX_MODEL_INFO_H_
#define SSD_INFER_ONNX_MODEL_INFO_H_

#include <cstdint>
#include <string>
#include <vector>

namespace ssd_infer {

struct OnnxModelInfo {
  std::string input_name;
  std::vector<int64_t> input_shape;  // -1 for a symbolic (dynamic) dimension
  std::vector<std::string> output_names;  // in graph order
};

// Reads the graph's first real input (initializers excluded) and its outputs from the
// protobuf file. OpenCV DNN does not expose the exported batch size, which the runner
// needs to pad the last batch; the openvino engine uses it to refuse a non-ONNX file the same way.
// Throws std::runtime_error naming the file when it is not ONNX.
OnnxModelInfo ReadOnnxModelInfo(const std::string& path);

}  // namespace ssd_infer

#endif  // SSD_INFER_ONNX_MODEL_INFO_H_
