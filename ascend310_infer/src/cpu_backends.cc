// The cpu build's choice of engine (--backend) and the checks both engines share.
#include "cpu_backends.h"

#include <filesystem>
#include <stdexcept>

#include "backend_support.h"
#include "image_files.h"

namespace fs = std::filesystem;

namespace ssd_infer {
namespace {

#ifdef SSD_WITH_OPENVINO
constexpr bool kBuiltWithOpenVino = true;
#else
constexpr bool kBuiltWithOpenVino = false;
#endif

// --backend, or the faster engine this executable has.
std::string ChosenEngine(const RunnerOptions& options) {
  if (!options.backend.empty()) return options.backend;
  return kBuiltWithOpenVino ? "openvino" : "opencv";
}

void CheckEngineFitsOptions(const std::string& engine, const RunnerOptions& options) {
  if (options.cpu_dvpp != "CPU") {
    throw std::runtime_error("--cpu_dvpp DVPP needs the Ascend310 build; the cpu build preprocesses with "
                             "OpenCV (pass --cpu_dvpp CPU)");
  }
  if (engine == "openvino" && !kBuiltWithOpenVino) {
    throw std::runtime_error("--backend openvino: this runner was built without OpenVINO (CMake did not find "
                             "OpenVINO's package when it was configured); install the openvino wheel with "
                             "bash scripts/setup_env.sh and rebuild with bash ascend310_infer/build.sh (or pass "
                             "-DOpenVINO_DIR=<site-packages>/openvino/cmake to CMake), or use --backend opencv");
  }
  if (engine == "opencv" && options.precision != "f32") {
    throw std::runtime_error("--precision " + options.precision + " is an OpenVINO setting and OpenCV DNN "
                             "computes in f32; drop the flag or use --backend openvino");
  }
  if (engine == "opencv" && LowercaseExtension(options.model_path) == ".xml") {
    throw std::runtime_error(options.model_path + " is an OpenVINO IR, which OpenCV DNN cannot read; run it "
                             "with --backend openvino or pass the ONNX export");
  }
}

}  // namespace

InputSize ResolveInputSize(const RunnerOptions& options, const std::string& input_name,
                           const std::vector<int64_t>& shape) {
  const std::string& model = options.model_path;
  if (shape.size() != 4 || (shape[1] != 3 && shape[1] != -1)) {
    throw std::runtime_error(model + " has input " + input_name + " of shape " + ShapeText(shape) +
                             "; an SSD export takes (batch, 3, height, width)");
  }
  InputSize size;
  size.batch = ResolveDimension("batch_size", options.batch_size, shape[0], 1, model);
  size.height = ResolveDimension("image_height", options.image_height, shape[2], 0, model);
  size.width = ResolveDimension("image_width", options.image_width, shape[3], 0, model);
  if (size.height <= 0 || size.width <= 0) {
    throw std::runtime_error(model + " has a dynamic input size; pass --image_height and --image_width");
  }
  return size;
}

void CheckOutputCount(const std::string& model_path, std::size_t count) {
  if (count != 2) {
    throw std::runtime_error(model_path + " has " + std::to_string(count) +
                             " outputs; the runner reads a plain SSD export with two (boxes, scores): a model "
                             "exported with --export_nms True (four outputs) returns final detections and needs no "
                             "runner, so export it again without --export_nms for the runner");
  }
}

void CheckOutputShapes(const std::string& model_path, int64_t batch, const std::vector<int64_t>& boxes,
                       const std::vector<int64_t>& scores) {
  if (boxes.size() != 3 || scores.size() != 3 || boxes[0] != batch || scores[0] != batch || boxes[2] != 4 ||
      boxes[1] <= 0 || boxes[1] != scores[1]) {
    const std::string batch_text = std::to_string(batch);
    throw std::runtime_error(model_path + " gives outputs of shapes " + ShapeText(boxes) + " and " +
                             ShapeText(scores) + "; expected (" + batch_text + ", N, 4) boxes and (" + batch_text +
                             ", N, classes) scores");
  }
}

std::vector<ImageDetections> SplitBatchOutputs(const float* boxes, const float* scores, int64_t count,
                                               int64_t num_boxes, int64_t num_classes) {
  std::vector<ImageDetections> detections(static_cast<std::size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const float* image_boxes = boxes + i * num_boxes * 4;
    const float* image_scores = scores + i * num_boxes * num_classes;
    ImageDetections& result = detections[static_cast<std::size_t>(i)];
    result.boxes.assign(image_boxes, image_boxes + num_boxes * 4);
    result.scores.assign(image_scores, image_scores + num_boxes * num_classes);
  }
  return detections;
}

std::string BuiltDeviceType() { return "CPU"; }

std::unique_ptr<InferenceBackend> CreateBackend(const RunnerOptions& options) {
  const std::string engine = ChosenEngine(options);
  CheckEngineFitsOptions(engine, options);
  if (!options.input_dump_dir.empty()) fs::create_directories(options.input_dump_dir);
#ifdef SSD_WITH_OPENVINO
  if (engine == "openvino") return CreateOpenVinoBackend(options);
#endif
  return CreateOpenCvDnnBackend(options);
}

}  // namespace ssd_infer
