// SSD inference runner: exported model + folder of images -> result_Files/<stem>_{0,1}.bin and a timing summary.
#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "image_files.h"
#include "inference_backend.h"
#include "result_files.h"
#include "runner_options.h"

namespace fs = std::filesystem;

namespace ssd_infer {
namespace {

// Accumulated wall time of the batches that count for the summary.
struct TimingTotals {
  int64_t images = 0;
  double preprocess_ms = 0.0;
  double inference_ms = 0.0;

  void Add(int64_t batch_images, const BatchTiming& timing) {
    images += batch_images;
    preprocess_ms += timing.preprocess_ms;
    inference_ms += timing.inference_ms;
  }
};

std::string SkippedText(const std::vector<std::string>& skipped) {
  if (skipped.empty()) return "";
  std::string names;
  const std::size_t shown = std::min<std::size_t>(skipped.size(), 5);
  for (std::size_t i = 0; i < shown; ++i) names += (i ? ", " : "") + skipped[i];
  if (shown < skipped.size()) names += ", ...";
  return "; skipped " + std::to_string(skipped.size()) + " non-image file(s): " + names;
}

void CheckDeviceAndModel(const RunnerOptions& options) {
  const std::string built = BuiltDeviceType();
  if (!options.device_type.empty() && options.device_type != built) {
    throw std::runtime_error("--device_type " + options.device_type + " is not what this runner was built for (" +
                             built + "); rebuild it with: bash ascend310_infer/build.sh " +
                             (options.device_type == "CPU" ? "cpu" : "ascend310 MINDSPORE_PATH"));
  }
  if (built != "CPU" && (!options.backend.empty() || options.precision != "f32")) {
    throw std::runtime_error("--backend and --precision choose among the cpu build's engines (OpenVINO, OpenCV "
                             "DNN); this runner was built for the " + built + " and runs MindSpore");
  }
  if (!fs::is_regular_file(options.model_path)) {
    throw std::runtime_error("model file " + options.model_path + " not found; export it first with: python "
                             "export.py --config_path CONFIG --file_format " +
                             (built == "CPU" ? "ONNX" : "MINDIR") + " --checkpoint_file_path CKPT");
  }
}

std::string Summary(const RunnerOptions& options, const ImageListing& listing, int64_t batch_size,
                    int64_t batches, const TimingTotals& first, const TimingTotals& rest) {
  const TimingTotals& counted = rest.images > 0 ? rest : first;
  const double total_ms = counted.preprocess_ms + counted.inference_ms;
  const auto images = static_cast<double>(counted.images);
  const int64_t padding = batches * batch_size - static_cast<int64_t>(listing.images.size());
  std::ostringstream text;
  text << std::fixed << std::setprecision(2);
  text << "device: " << BuiltDeviceType() << "\n"
       << "model: " << options.model_path << "\n"
       << "images: " << listing.images.size() << " (" << listing.skipped.size() << " non-image files skipped)\n"
       << "batch size: " << batch_size << " (" << batches << " batches, " << padding << " padding images)\n"
       << "first batch: " << first.preprocess_ms + first.inference_ms << " ms for " << first.images
       << " images (includes one-time initialisation"
       << (rest.images > 0 ? "; excluded below)\n" : "; the only batch, so included below)\n")
       << "mean latency per image: " << total_ms / images << " ms (preprocessing " << counted.preprocess_ms / images
       << " ms + inference " << counted.inference_ms / images << " ms) over " << counted.images << " images\n"
       << "throughput: " << images * 1000.0 / total_ms << " images/s\n";
  return text.str();
}

int RunInference(const RunnerOptions& options) {
  const ImageListing listing = ListImages(options.dataset_path);
  std::cout << "[runner] " << listing.images.size() << " images in " << options.dataset_path
            << SkippedText(listing.skipped) << std::endl;
  if (listing.images.empty()) {
    throw std::runtime_error("no images (.jpg .jpeg .png .bmp) in " + options.dataset_path +
                             (listing.skipped.empty() ? " (the folder is empty)"
                                                      : " (" + std::to_string(listing.skipped.size()) +
                                                            " other files skipped)"));
  }
  CheckDeviceAndModel(options);
  const std::unique_ptr<InferenceBackend> backend = CreateBackend(options);
  std::cout << "[runner] " << backend->Description() << std::endl;
  fs::create_directories(options.output_dir);

  const auto batch_size = static_cast<std::size_t>(backend->BatchSize());
  TimingTotals first;
  TimingTotals rest;
  int64_t batches = 0;
  for (std::size_t begin = 0; begin < listing.images.size(); begin += batch_size) {
    const std::size_t end = std::min(begin + batch_size, listing.images.size());
    Batch batch{std::vector<std::string>(listing.images.begin() + begin, listing.images.begin() + end)};
    BatchTiming timing;
    const std::vector<ImageDetections> detections = backend->Run(batch, &timing);
    for (std::size_t i = 0; i < detections.size(); ++i) {
      WriteDetections(options.output_dir, ImageStem(batch.image_paths[i]), detections[i]);
    }
    (batches == 0 ? first : rest).Add(static_cast<int64_t>(end - begin), timing);
    ++batches;
  }
  const std::string summary = Summary(options, listing, backend->BatchSize(), batches, first, rest);
  std::cout << summary;
  WriteTimingSummary(options.timing_dir, summary);
  std::cout << "[runner] wrote " << listing.images.size() << " x 2 result files to " << options.output_dir
            << " and the timing summary to " << (fs::path(options.timing_dir) / "test_perform_static.txt").string()
            << std::endl;
  return 0;
}

}  // namespace
}  // namespace ssd_infer

int main(int argc, char** argv) {
  const std::string program = argc > 0 ? argv[0] : "main";
  try {
    const ssd_infer::RunnerOptions options = ssd_infer::ParseRunnerOptions(argc, argv);
    if (options.show_help) {
      std::cout << ssd_infer::UsageText(program);
      return 0;
    }
    return ssd_infer::RunInference(options);
  } catch (const ssd_infer::UsageError& error) {
    std::cerr << "error: " << error.what() << "\n" << ssd_infer::UsageText(program);
    return 2;
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << std::endl;
    return 1;
  }
}
