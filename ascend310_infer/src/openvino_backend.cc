// cpu build, engine openvino: an ONNX file or an OpenVINO IR (.xml + .bin) compiled by OpenVINO for the CPU,
// preprocessing with OpenCV (cpu_preprocess, the same code as the opencv engine's, so the inputs are
// bit-identical). Built only when CMake finds OpenVINO's package (SSD_WITH_OPENVINO).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include <openvino/openvino.hpp>

#include "backend_support.h"
#include "cpu_backends.h"
#include "cpu_preprocess.h"
#include "image_files.h"
#include "inference_backend.h"
#include "onnx_model_info.h"

namespace fs = std::filesystem;

namespace ssd_infer {
namespace {

// "2026.4.1" of the build number "2026.4.1-22982-e213a147257-releases/2026/4".
std::string OpenVinoVersion() {
  const std::string build = ov::get_openvino_version().buildNumber;
  return build.substr(0, build.find('-'));
}

// OpenVINO's messages interleave the source locations of its checks ("Exception from <file>:<line>:",
// "Check '...' failed at <file>:<line>:") with the reasons; only the reasons help a user.
std::string OpenVinoReason(const ov::Exception& error) {
  std::istringstream lines(error.what());
  std::string reason;
  std::string line;
  while (std::getline(lines, line)) {
    const bool location = line.rfind("Exception from ", 0) == 0 ||
                          (line.rfind("Check '", 0) == 0 && line.find("' failed at ") != std::string::npos);
    if (!location && !line.empty()) reason += (reason.empty() ? "" : " ") + line;
  }
  return reason.empty() ? error.what() : reason;
}

// The dimensions of `shape`, -1 for a dynamic one (as OnnxModelInfo); empty when even the rank is dynamic.
std::vector<int64_t> Dimensions(const ov::PartialShape& shape) {
  std::vector<int64_t> dimensions;
  if (shape.rank().is_dynamic()) return dimensions;
  for (const ov::Dimension& dimension : shape) {
    dimensions.push_back(dimension.is_static() ? dimension.get_length() : -1);
  }
  return dimensions;
}

std::shared_ptr<ov::Model> ReadModel(ov::Core& core, const std::string& path) {
  if (LowercaseExtension(path) == ".xml") {
    const fs::path weights = fs::path(path).replace_extension(".bin");
    if (!fs::is_regular_file(weights)) {
      throw std::runtime_error(weights.string() + " not found: an OpenVINO IR is the .xml and its .bin side by "
                               "side; copy both, or write the IR again");
    }
  } else {
    // Anything but an IR must be ONNX: say so as the opencv engine does, before OpenVINO tries (and logs) every
    // other frontend on it.
    ReadOnnxModelInfo(path);
  }
  try {
    return core.read_model(path);
  } catch (const ov::Exception& error) {
    throw std::runtime_error(path + " is not a readable ONNX file or OpenVINO IR; export one with export.py "
                             "--file_format ONNX (OpenVINO said: " + OpenVinoReason(error) + ")");
  }
}

void CheckPrecisionSupported(ov::Core& core, const std::string& precision) {
  if (precision != "bf16") return;
  const std::vector<std::string> capabilities = core.get_property("CPU", ov::device::capabilities);
  if (std::find(capabilities.begin(), capabilities.end(), ov::device::capability::BF16) == capabilities.end()) {
    throw std::runtime_error("--precision bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX), which this one "
                             "lacks; use --precision f32");
  }
}

void CheckFloatTensors(const ov::Model& model, const std::string& model_path) {
  for (const ov::Output<const ov::Node>& tensor : {model.input(), model.output(0), model.output(1)}) {
    if (tensor.get_element_type() != ov::element::f32) {
      throw std::runtime_error(model_path + ": " + tensor.get_any_name() + " is " +
                               tensor.get_element_type().get_type_name() + "; an SSD export takes and gives float32");
    }
  }
}

// A dynamic dimension (batch, or height/width) gets the resolved value: every Run feeds that shape, and a
// static shape lets OpenVINO plan the whole graph once.
void FixInputShape(ov::Model& model, const InputSize& input, const std::string& model_path) {
  if (model.input().get_partial_shape().is_static()) return;
  const ov::PartialShape shape{input.batch, 3, input.height, input.width};
  try {
    model.reshape(shape);
  } catch (const ov::Exception& error) {
    throw std::runtime_error(model_path + " cannot take input " + shape.to_string() + " (OpenVINO said: " +
                             OpenVinoReason(error) + "); export it with that size instead");
  }
}

// The project sets ONEDNN_MAX_CPU_ISA=AVX2 for MindSpore (src/model_utils/device_adapter.py), and OpenVINO's
// oneDNN obeys it too: below the ISA a kernel needs (bf16: AVX512_CORE_BF16 or AMX) compiling fails with
// a message that does not say why.
std::string IsaCapHint() {
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (cap == nullptr) return "";
  return std::string(" (ONEDNN_MAX_CPU_ISA=") + cap + " is set in the environment and limits OpenVINO's CPU "
         "kernels too; unset it for the runner)";
}

ov::AnyMap CompileConfig(const RunnerOptions& options) {
  ov::AnyMap config = {
      // Always explicit: OpenVINO's CPU default is bf16 wherever the CPU has native bf16, which moved
      // ssd300 scores by up to 0.33. An INT8 model keeps its quantized layers in INT8 either way.
      ov::hint::inference_precision(options.precision == "bf16" ? ov::element::bf16 : ov::element::f32),
      // The runner keeps one request in flight; THROUGHPUT would split the cores into streams for
      // parallel requests that never come.
      ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
  };
  if (options.threads > 0) config.insert(ov::inference_num_threads(static_cast<int32_t>(options.threads)));
  return config;
}

class OpenVinoBackend final : public InferenceBackend {
 public:
  explicit OpenVinoBackend(const RunnerOptions& options)
      : model_path_(options.model_path), input_dump_dir_(options.input_dump_dir) {
    ov::Core core;
    CheckPrecisionSupported(core, options.precision);
    const std::shared_ptr<ov::Model> model = ReadModel(core, model_path_);
    if (model->inputs().size() != 1) {
      throw std::runtime_error(model_path_ + " has " + std::to_string(model->inputs().size()) +
                               " inputs; an SSD export takes one (batch, 3, height, width)");
    }
    input_ = ResolveInputSize(options, model->input().get_any_name(), Dimensions(model->input().get_partial_shape()));
    CheckOutputCount(model_path_, model->outputs().size());
    CheckFloatTensors(*model, model_path_);
    FixInputShape(*model, input_, model_path_);
    const std::vector<int64_t> boxes = Dimensions(model->output(0).get_partial_shape());
    const std::vector<int64_t> scores = Dimensions(model->output(1).get_partial_shape());
    CheckOutputShapes(model_path_, input_.batch, boxes, scores);
    num_boxes_ = boxes[1];
    num_classes_ = scores[2];
    try {
      compiled_ = core.compile_model(model, "CPU", CompileConfig(options));
    } catch (const ov::Exception& error) {
      throw std::runtime_error("OpenVINO cannot compile " + model_path_ + " for the CPU: " + OpenVinoReason(error) +
                               IsaCapHint());
    }
    request_ = compiled_.create_infer_request();
  }

  int64_t BatchSize() const override { return input_.batch; }

  std::string Description() const override {
    // Read back from the compiled model: what runs, not what was asked for.
    const ov::element::Type precision = compiled_.get_property(ov::hint::inference_precision);
    const int32_t threads = compiled_.get_property(ov::inference_num_threads);
    std::ostringstream text;
    text << "OpenVINO " << OpenVinoVersion() << " CPU (" << precision.get_type_name() << " precision, " << threads
         << " threads) running " << model_path_ << ", input (" << input_.batch << ", 3, " << input_.height << ", "
         << input_.width << "), " << kCpuPreprocessingText;
    return text.str();
  }

  std::vector<ImageDetections> Run(const Batch& batch, BatchTiming* timing) override {
    auto start = std::chrono::steady_clock::now();
    // Preprocessed straight into the request's own input buffer: no copy.
    PreprocessBatch(batch.image_paths, input_.batch, input_.height, input_.width, input_dump_dir_,
                    request_.get_input_tensor().data<float>());
    timing->preprocess_ms = MillisecondsSince(start);

    start = std::chrono::steady_clock::now();
    request_.infer();
    timing->inference_ms = MillisecondsSince(start);
    return SplitBatchOutputs(request_.get_output_tensor(0).data<float>(), request_.get_output_tensor(1).data<float>(),
                             static_cast<int64_t>(batch.image_paths.size()), num_boxes_, num_classes_);
  }

 private:
  std::string model_path_;
  std::string input_dump_dir_;
  InputSize input_;
  int64_t num_boxes_ = 0;
  int64_t num_classes_ = 0;
  ov::CompiledModel compiled_;
  ov::InferRequest request_;
};

}  // namespace

std::unique_ptr<InferenceBackend> CreateOpenVinoBackend(const RunnerOptions& options) {
  return std::make_unique<OpenVinoBackend>(options);
}

}  // namespace ssd_infer
