// The cpu build's two engines behind InferenceBackend, and the model checks they share so that both
// read a model the same way and describe a misfit in the same words.
//   openvino  OpenVINO runs an ONNX file or an OpenVINO IR (built when CMake finds OpenVINO's package)
//   opencv    OpenCV DNN runs an ONNX file (always built: the dependency-light fallback)
#ifndef SSD_INFER_CPU_BACKENDS_H_
#define SSD_INFER_CPU_BACKENDS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "inference_backend.h"
#include "runner_options.h"

namespace ssd_infer {

// The network input every Run feeds: batch x 3 x height x width.
struct InputSize {
  int64_t batch = 1;
  int64_t height = 0;
  int64_t width = 0;
};

// Checks that the model's input `input_name` of `shape` (-1: dynamic dimension) is (batch, 3, height,
// width) and resolves each dimension against its flag: a dynamic batch takes --batch_size (default 1),
// a dynamic height or width needs its flag. Throws std::runtime_error naming the model and the fix.
InputSize ResolveInputSize(const RunnerOptions& options, const std::string& input_name,
                           const std::vector<int64_t>& shape);

// Throws unless the model has the two outputs (boxes, scores) of an SSD export with decoding.
void CheckOutputCount(const std::string& model_path, std::size_t count);

// Throws unless `boxes` is (batch, N, 4) and `scores` is (batch, N, classes).
void CheckOutputShapes(const std::string& model_path, int64_t batch, const std::vector<int64_t>& boxes,
                       const std::vector<int64_t>& scores);

// The first `count` images' rows of batch outputs: boxes batch x N x 4, scores batch x N x classes.
std::vector<ImageDetections> SplitBatchOutputs(const float* boxes, const float* scores, int64_t count,
                                               int64_t num_boxes, int64_t num_classes);

std::unique_ptr<InferenceBackend> CreateOpenCvDnnBackend(const RunnerOptions& options);

// Defined only when the build found OpenVINO (SSD_WITH_OPENVINO).
std::unique_ptr<InferenceBackend> CreateOpenVinoBackend(const RunnerOptions& options);

}  // namespace ssd_infer

#endif  // SSD_INFER_CPU_BACKENDS_H_
