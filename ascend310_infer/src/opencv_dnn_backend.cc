// cpu build, engine opencv: the exported ONNX model in OpenCV DNN, preprocessing with OpenCV (cpu_preprocess).
#include <chrono>
#include <sstream>
#include <stdexcept>

#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include "backend_support.h"
#include "cpu_backends.h"
#include "cpu_preprocess.h"
#include "inference_backend.h"
#include "onnx_model_info.h"

namespace ssd_infer {
namespace {

class OpenCvDnnBackend final : public InferenceBackend {
 public:
  explicit OpenCvDnnBackend(const RunnerOptions& options)
      : model_path_(options.model_path), input_dump_dir_(options.input_dump_dir) {
    const OnnxModelInfo info = ReadOnnxModelInfo(model_path_);
    input_ = ResolveInputSize(options, info.input_name, info.input_shape);
    CheckOutputCount(model_path_, info.output_names.size());
    output_names_ = info.output_names;
    if (options.threads > 0) cv::setNumThreads(static_cast<int>(options.threads));
    // The importer logs each failing node before throwing; the exception below says it once.
    const auto log_level = cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    try {
      net_ = cv::dnn::readNetFromONNX(model_path_);
      cv::utils::logging::setLogLevel(log_level);
    } catch (const cv::Exception& error) {
      cv::utils::logging::setLogLevel(log_level);
      throw std::runtime_error("OpenCV " CV_VERSION " cannot load " + model_path_ +
                               "; OpenCV DNN reads the float ONNX of export.py (not an INT8 --quantize model nor a "
                               "--export_nms one): run this file with --backend openvino, or export a plain float "
                               "ONNX (OpenCV said: " + error.msg + ")");
    }
  }

  int64_t BatchSize() const override { return input_.batch; }

  std::string Description() const override {
    std::ostringstream text;
    text << "OpenCV " << CV_VERSION << " DNN (" << cv::getNumThreads() << " threads) running " << model_path_
         << ", input (" << input_.batch << ", 3, " << input_.height << ", " << input_.width << "), "
         << kCpuPreprocessingText;
    return text.str();
  }

  std::vector<ImageDetections> Run(const Batch& batch, BatchTiming* timing) override {
    auto start = std::chrono::steady_clock::now();
    const int dims[4] = {static_cast<int>(input_.batch), 3, static_cast<int>(input_.height),
                         static_cast<int>(input_.width)};
    cv::Mat input(4, dims, CV_32F);
    PreprocessBatch(batch.image_paths, input_.batch, input_.height, input_.width, input_dump_dir_,
                    input.ptr<float>());
    timing->preprocess_ms = MillisecondsSince(start);

    start = std::chrono::steady_clock::now();
    net_.setInput(input);
    std::vector<cv::Mat> outputs;
    net_.forward(outputs, std::vector<cv::String>(output_names_.begin(), output_names_.end()));
    timing->inference_ms = MillisecondsSince(start);

    const cv::Mat& boxes = outputs[0];
    const cv::Mat& scores = outputs[1];
    CheckOutputShapes(model_path_, input_.batch, MatShape(boxes), MatShape(scores));
    if (!boxes.isContinuous() || !scores.isContinuous()) {
      throw std::logic_error("OpenCV DNN returned non-contiguous outputs for " + model_path_);
    }
    return SplitBatchOutputs(boxes.ptr<float>(), scores.ptr<float>(), static_cast<int64_t>(batch.image_paths.size()),
                             boxes.size[1], scores.size[2]);
  }

 private:
  static std::vector<int64_t> MatShape(const cv::Mat& mat) {
    return std::vector<int64_t>(mat.size.p, mat.size.p + mat.dims);
  }

  std::string model_path_;
  std::string input_dump_dir_;
  std::vector<std::string> output_names_;
  InputSize input_;
  cv::dnn::Net net_;
};

}  // namespace

std::unique_ptr<InferenceBackend> CreateOpenCvDnnBackend(const RunnerOptions& options) {
  return std::make_unique<OpenCvDnnBackend>(options);
}

}  // namespace ssd_infer
