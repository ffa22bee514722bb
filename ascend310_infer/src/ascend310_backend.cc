// ascend310 backend: a MINDIR model through MindSpore's C++ inference API on an Ascend 310, with the
// images preprocessed either on the device (DVPP decode+resize, AIPP colour conversion and normalisation)
// or on the host by MindSpore's own dataset ops (the same ops as the Python eval pipeline).
// Built only with -DBACKEND=ascend310 -DMINDSPORE_PATH=... (needs the Ascend toolkit's MindSpore).
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/serialization.h"
#include "include/api/types.h"
#include "include/dataset/execute.h"
#include "include/dataset/vision.h"
#include "include/dataset/vision_ascend.h"

#include "backend_support.h"
#include "image_files.h"
#include "inference_backend.h"

namespace fs = std::filesystem;
namespace ds = mindspore::dataset;

namespace ssd_infer {
namespace {

void Check(const mindspore::Status& status, const std::string& what) {
  if (status != mindspore::kSuccess) throw std::runtime_error(what + " failed: " + status.ToString());
}

mindspore::MSTensor ReadFileToTensor(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open image " + path);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return mindspore::MSTensor(path, mindspore::DataType::kNumberTypeUInt8, {static_cast<int64_t>(bytes.size())},
                             bytes.data(), bytes.size());
}

std::string DefaultAippPath() {
  // The executable sits in ascend310_infer/out/; aipp.cfg one level up.
  return (fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "aipp.cfg").string();
}

class Ascend310Backend final : public InferenceBackend {
 public:
  explicit Ascend310Backend(const RunnerOptions& options)
      : model_path_(options.model_path), use_dvpp_(options.cpu_dvpp == "DVPP"),
        input_dump_dir_(options.input_dump_dir) {
    auto device = std::make_shared<mindspore::Ascend310DeviceInfo>();
    device->SetDeviceID(static_cast<uint32_t>(options.device_id));
    if (use_dvpp_) {
      const std::string aipp = options.aipp_path.empty() ? DefaultAippPath() : options.aipp_path;
      if (!fs::is_regular_file(aipp)) {
        throw std::runtime_error("AIPP config " + aipp + " not found (--aipp_path); DVPP needs it for colour "
                                 "conversion and normalisation");
      }
      device->SetInsertOpConfigPath(aipp);
    }
    auto context = std::make_shared<mindspore::Context>();
    context->MutableDeviceInfo().push_back(device);
    mindspore::Graph graph;
    Check(mindspore::Serialization::Load(model_path_, mindspore::ModelType::kMindIR, &graph),
          "loading MINDIR " + model_path_);
    Check(model_.Build(mindspore::GraphCell(graph), context), "building " + model_path_ + " for the Ascend310");

    const std::vector<mindspore::MSTensor> inputs = model_.GetInputs();
    if (inputs.size() != 1 || inputs[0].Shape().size() != 4) {
      throw std::runtime_error(model_path_ + " must have one (batch, 3, height, width) input");
    }
    input_ = inputs[0];
    const std::vector<int64_t> shape = input_.Shape();
    batch_size_ = shape[0];
    height_ = shape[2];
    width_ = shape[3];
    ResolveDimension("batch_size", options.batch_size, batch_size_, batch_size_, model_path_);
    ResolveDimension("image_height", options.image_height, height_, height_, model_path_);
    ResolveDimension("image_width", options.image_width, width_, width_, model_path_);

    if (use_dvpp_) {
      if (batch_size_ != 1) {
        throw std::runtime_error("DVPP with AIPP feeds one image per run, but " + model_path_ + " has batch " +
                                 std::to_string(batch_size_) + "; export it with --batch_size 1 or use --cpu_dvpp CPU");
      }
      if (width_ % 16 != 0 || height_ % 2 != 0) {
        throw std::runtime_error("DVPP needs the input width to be a multiple of 16 and the height even; " +
                                 model_path_ + " takes " + std::to_string(height_) + "x" + std::to_string(width_) +
                                 "; use --cpu_dvpp CPU");
      }
      preprocess_ = std::make_unique<ds::Execute>(
          std::make_shared<ds::vision::DvppDecodeResizeJpeg>(
              std::vector<uint32_t>{static_cast<uint32_t>(height_), static_cast<uint32_t>(width_)}),
          ds::MapTargetDevice::kAscend310, static_cast<uint32_t>(options.device_id));
    } else {
      const std::vector<std::shared_ptr<ds::TensorTransform>> ops = {
          std::make_shared<ds::vision::Decode>(),
          std::make_shared<ds::vision::Resize>(
              std::vector<int32_t>{static_cast<int32_t>(height_), static_cast<int32_t>(width_)}),
          std::make_shared<ds::vision::Normalize>(std::vector<float>(std::begin(kImageMean), std::end(kImageMean)),
                                                  std::vector<float>(std::begin(kImageStd), std::end(kImageStd))),
          std::make_shared<ds::vision::HWC2CHW>(),
      };
      preprocess_ = std::make_unique<ds::Execute>(ops);
    }
    if (!input_dump_dir_.empty()) fs::create_directories(input_dump_dir_);
  }

  int64_t BatchSize() const override { return batch_size_; }

  std::string Description() const override {
    std::ostringstream text;
    text << "MindSpore Ascend310 running " << model_path_ << ", input " << ShapeText(input_.Shape()) << ", "
         << (use_dvpp_ ? "DVPP decode+resize with AIPP normalisation" : "CPU preprocessing (MindSpore dataset ops)");
    return text.str();
  }

  std::vector<ImageDetections> Run(const Batch& batch, BatchTiming* timing) override {
    const auto count = static_cast<int64_t>(batch.image_paths.size());
    auto start = std::chrono::steady_clock::now();
    std::vector<uint8_t> input_bytes;  // the batch, zero padded (DVPP: the one YUV image as DVPP wrote it)
    for (int64_t i = 0; i < count; ++i) {
      const std::string& path = batch.image_paths[static_cast<std::size_t>(i)];
      if (use_dvpp_ && !IsJpeg(path)) {
        throw std::runtime_error("DVPP decodes JPEG only and " + path + " is not a .jpg/.jpeg; use --cpu_dvpp CPU");
      }
      mindspore::MSTensor image;
      Check((*preprocess_)(ReadFileToTensor(path), &image), "preprocessing " + path);
      const auto* data = static_cast<const uint8_t*>(image.Data().get());
      if (use_dvpp_) {
        input_bytes.assign(data, data + image.DataSize());
      } else {
        const std::size_t per_image = input_.DataSize() / static_cast<std::size_t>(batch_size_);
        if (image.DataSize() != per_image) {
          throw std::runtime_error("preprocessing " + path + " gave " + std::to_string(image.DataSize()) +
                                   " bytes; the model takes " + std::to_string(per_image) + " per image");
        }
        input_bytes.resize(input_.DataSize(), 0);
        std::memcpy(input_bytes.data() + static_cast<std::size_t>(i) * per_image, data, per_image);
      }
      if (!input_dump_dir_.empty()) {
        const fs::path dump = fs::path(input_dump_dir_) / (ImageStem(path) + "_input.bin");
        std::ofstream(dump, std::ios::binary).write(reinterpret_cast<const char*>(data),
                                                    static_cast<std::streamsize>(image.DataSize()));
      }
    }
    timing->preprocess_ms = MillisecondsSince(start);

    start = std::chrono::steady_clock::now();
    const std::vector<mindspore::MSTensor> inputs = {mindspore::MSTensor(
        input_.Name(), input_.DataType(), input_.Shape(), input_bytes.data(), input_bytes.size())};
    std::vector<mindspore::MSTensor> outputs;
    Check(model_.Predict(inputs, &outputs), "inference on " + batch.image_paths.front());
    timing->inference_ms = MillisecondsSince(start);
    return SplitOutputs(outputs, count);
  }

 private:
  static bool IsJpeg(const std::string& path) {
    const std::string extension = LowercaseExtension(path);
    return extension == ".jpg" || extension == ".jpeg";
  }

  std::vector<ImageDetections> SplitOutputs(const std::vector<mindspore::MSTensor>& outputs, int64_t count) const {
    if (outputs.size() != 2 || outputs[0].Shape().size() != 3 || outputs[1].Shape().size() != 3 ||
        outputs[0].Shape()[2] != 4 || outputs[0].Shape()[1] != outputs[1].Shape()[1]) {
      throw std::runtime_error(model_path_ + " must output (batch, N, 4) boxes and (batch, N, classes) scores");
    }
    const int64_t num_boxes = outputs[0].Shape()[1];
    const int64_t num_classes = outputs[1].Shape()[2];
    const auto* boxes = static_cast<const float*>(outputs[0].Data().get());
    const auto* scores = static_cast<const float*>(outputs[1].Data().get());
    std::vector<ImageDetections> detections(static_cast<std::size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      ImageDetections& result = detections[static_cast<std::size_t>(i)];
      result.boxes.assign(boxes + i * num_boxes * 4, boxes + (i + 1) * num_boxes * 4);
      result.scores.assign(scores + i * num_boxes * num_classes, scores + (i + 1) * num_boxes * num_classes);
    }
    return detections;
  }

  std::string model_path_;
  bool use_dvpp_;
  std::string input_dump_dir_;
  mindspore::Model model_;
  mindspore::MSTensor input_;
  std::unique_ptr<ds::Execute> preprocess_;
  int64_t batch_size_ = 1;
  int64_t height_ = 0;
  int64_t width_ = 0;
};

}  // namespace

std::string BuiltDeviceType() { return "Ascend310"; }

std::unique_ptr<InferenceBackend> CreateBackend(const RunnerOptions& options) {
  return std::make_unique<Ascend310Backend>(options);
}

}  // namespace ssd_infer
