// Command-line options of the SSD inference runner, shared by every backend.
#ifndef SSD_INFER_RUNNER_OPTIONS_H_
#define SSD_INFER_RUNNER_OPTIONS_H_

#include <cstdint>
#include <stdexcept>
#include <string>

namespace ssd_infer {

// A command line the runner cannot act on; main prints the message and the usage text.
class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct RunnerOptions {
  std::string model_path;        // ONNX or OpenVINO IR .xml (cpu build), MINDIR (ascend310 build)
  std::string dataset_path;      // folder of images
  int64_t image_height = 0;      // 0: take it from the model's input
  int64_t image_width = 0;
  int64_t batch_size = 0;        // 0: take it from the model's input
  std::string device_type;       // "CPU" or "Ascend310"; empty: the device of the built backend
  int64_t device_id = 0;
  std::string cpu_dvpp = "CPU";  // Ascend310 preprocessing: "CPU" or "DVPP"
  std::string aipp_path;         // AIPP config for DVPP; empty: aipp.cfg beside the build folder
  std::string output_dir = "./result_Files";
  std::string timing_dir = "./time_Result";
  std::string input_dump_dir;    // when set, each image's model input is written there (debugging)
  int64_t threads = 0;           // 0: the inference library's default
  std::string backend;           // cpu build: "openvino" or "opencv"; empty: openvino when built with it
  std::string precision = "f32";  // OpenVINO's inference precision: "f32" or "bf16"
  bool show_help = false;
};

// Parses argv ("--name value" or "--name=value"); throws UsageError naming the bad flag.
RunnerOptions ParseRunnerOptions(int argc, const char* const* argv);

// The usage text listing every flag with its default.
std::string UsageText(const std::string& program);

}  // namespace ssd_infer

#endif  // SSD_INFER_RUNNER_OPTIONS_H_
