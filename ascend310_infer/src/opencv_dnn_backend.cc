// cpu backend: the exported ONNX model in OpenCV DNN, preprocessing with OpenCV (cpu_preprocess).
#include <chrono>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include "backend_support.h"
#include "cpu_preprocess.h"
#include "image_files.h"
#include "inference_backend.h"
#include "onnx_model_info.h"
#include "result_files.h"

namespace fs = std::filesystem;

namespace ssd_infer {
namespace {

class OpenCvDnnBackend final : public InferenceBackend {
 public:
  explicit OpenCvDnnBackend(const RunnerOptions& options)
      : model_path_(options.model_path), input_dump_dir_(options.input_dump_dir) {
    if (options.cpu_dvpp != "CPU") {
      throw std::runtime_error("--cpu_dvpp DVPP needs the Ascend310 build; the cpu build preprocesses with "
                               "OpenCV (pass --cpu_dvpp CPU)");
    }
    const OnnxModelInfo info = ReadOnnxModelInfo(model_path_);
    if (info.input_shape.size() != 4 || (info.input_shape[1] != 3 && info.input_shape[1] != -1)) {
      throw std::runtime_error(model_path_ + " has input " + info.input_name + " of shape " +
                               ShapeText(info.input_shape) + "; an SSD export takes (batch, 3, height, width)");
    }
    if (info.output_names.size() != 2) {
      throw std::runtime_error(model_path_ + " has " + std::to_string(info.output_names.size()) +
                               " outputs; an SSD export with decoding has two (boxes, scores)");
    }
    batch_size_ = ResolveDimension("batch_size", options.batch_size, info.input_shape[0], 1, model_path_);
    height_ = ResolveDimension("image_height", options.image_height, info.input_shape[2], 0, model_path_);
    width_ = ResolveDimension("image_width", options.image_width, info.input_shape[3], 0, model_path_);
    if (height_ <= 0 || width_ <= 0) {
      throw std::runtime_error(model_path_ + " has a dynamic input size; pass --image_height and --image_width");
    }
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
                               "; export it with export.py, which rewrites MindSpore's ONNX into a form "
                               "OpenCV 4.6 reads (OpenCV said: " + error.msg + ")");
    }
    if (!input_dump_dir_.empty()) fs::create_directories(input_dump_dir_);
  }

  int64_t BatchSize() const override { return batch_size_; }

  std::string Description() const override {
    std::ostringstream text;
    text << "OpenCV " << CV_VERSION << " DNN (" << cv::getNumThreads() << " threads) running " << model_path_
         << ", input (" << batch_size_ << ", 3, " << height_ << ", " << width_
         << "), OpenCV preprocessing (RGB, bilinear resize, mean/std)";
    return text.str();
  }

  std::vector<ImageDetections> Run(const Batch& batch, BatchTiming* timing) override {
    const auto count = static_cast<int64_t>(batch.image_paths.size());
    if (count < 1 || count > batch_size_) {
      throw std::logic_error("batch of " + std::to_string(count) + " images for a model of batch " +
                             std::to_string(batch_size_));
    }
    auto start = std::chrono::steady_clock::now();
    const int dims[4] = {static_cast<int>(batch_size_), 3, static_cast<int>(height_), static_cast<int>(width_)};
    cv::Mat input(4, dims, CV_32F, cv::Scalar(0.0f));  // padding images stay 0 (= the mean colour)
    const int64_t image_floats = 3 * height_ * width_;
    for (int64_t i = 0; i < count; ++i) {
      float* image = input.ptr<float>(static_cast<int>(i));
      PreprocessImage(batch.image_paths[i], height_, width_, image);
      if (!input_dump_dir_.empty()) {
        const fs::path dump = fs::path(input_dump_dir_) / (ImageStem(batch.image_paths[i]) + "_input.bin");
        WriteFloatFile(dump.string(), image, static_cast<std::size_t>(image_floats));
      }
    }
    timing->preprocess_ms = MillisecondsSince(start);

    start = std::chrono::steady_clock::now();
    net_.setInput(input);
    std::vector<cv::Mat> outputs;
    net_.forward(outputs, std::vector<cv::String>(output_names_.begin(), output_names_.end()));
    timing->inference_ms = MillisecondsSince(start);

    const cv::Mat& boxes = outputs[0];
    const cv::Mat& scores = outputs[1];
    if (boxes.dims != 3 || scores.dims != 3 || boxes.size[0] != batch_size_ || scores.size[0] != batch_size_ ||
        boxes.size[2] != 4 || boxes.size[1] != scores.size[1] || !boxes.isContinuous() || !scores.isContinuous()) {
      throw std::runtime_error(model_path_ + " gave outputs of shapes " + ShapeText(MatShape(boxes)) + " and " +
                               ShapeText(MatShape(scores)) + "; expected (batch, N, 4) boxes and (batch, N, classes)"
                               " scores");
    }
    const int64_t num_boxes = boxes.size[1];
    const int64_t num_classes = scores.size[2];
    std::vector<ImageDetections> detections(static_cast<std::size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      const float* image_boxes = boxes.ptr<float>(static_cast<int>(i));
      const float* image_scores = scores.ptr<float>(static_cast<int>(i));
      ImageDetections& result = detections[static_cast<std::size_t>(i)];
      result.boxes.assign(image_boxes, image_boxes + num_boxes * 4);
      result.scores.assign(image_scores, image_scores + num_boxes * num_classes);
    }
    return detections;
  }

 private:
  static std::vector<int64_t> MatShape(const cv::Mat& mat) {
    return std::vector<int64_t>(mat.size.p, mat.size.p + mat.dims);
  }

  std::string model_path_;
  std::string input_dump_dir_;
  std::vector<std::string> output_names_;
  int64_t batch_size_ = 1;
  int64_t height_ = 0;
  int64_t width_ = 0;
  cv::dnn::Net net_;
};

}  // namespace

std::string BuiltDeviceType() { return "CPU"; }

std::unique_ptr<InferenceBackend> CreateBackend(const RunnerOptions& options) {
  return std::make_unique<OpenCvDnnBackend>(options);
}

}  // namespace ssd_infer
