#include "runner_options.h"

#include <functional>
#include <map>
#include <sstream>

namespace ssd_infer {
namespace {

int64_t ParseInteger(const std::string& flag, const std::string& text, int64_t minimum) {
  std::size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size()) {
    throw UsageError("--" + flag + " needs an integer, got '" + text + "'");
  }
  if (value < minimum) {
    throw UsageError("--" + flag + " must be >= " + std::to_string(minimum) + ", got " + text);
  }
  return value;
}

using Setter = std::function<void(RunnerOptions*, const std::string&)>;

Setter Text(std::string RunnerOptions::*field) {
  return [field](RunnerOptions* options, const std::string& value) { options->*field = value; };
}

Setter Integer(const std::string& flag, int64_t RunnerOptions::*field, int64_t minimum) {
  return [flag, field, minimum](RunnerOptions* options, const std::string& value) {
    options->*field = ParseInteger(flag, value, minimum);
  };
}

const std::map<std::string, Setter>& Setters() {
  static const std::map<std::string, Setter> setters = {
      {"model_path", Text(&RunnerOptions::model_path)},
      {"mindir_path", Text(&RunnerOptions::model_path)},  // the seed's flag name
      {"dataset_path", Text(&RunnerOptions::dataset_path)},
      {"image_height", Integer("image_height", &RunnerOptions::image_height, 0)},
      {"image_width", Integer("image_width", &RunnerOptions::image_width, 0)},
      {"batch_size", Integer("batch_size", &RunnerOptions::batch_size, 0)},
      {"device_type", Text(&RunnerOptions::device_type)},
      {"device_id", Integer("device_id", &RunnerOptions::device_id, 0)},
      {"cpu_dvpp", Text(&RunnerOptions::cpu_dvpp)},
      {"aipp_path", Text(&RunnerOptions::aipp_path)},
      {"output_dir", Text(&RunnerOptions::output_dir)},
      {"timing_dir", Text(&RunnerOptions::timing_dir)},
      {"input_dump_dir", Text(&RunnerOptions::input_dump_dir)},
      {"threads", Integer("threads", &RunnerOptions::threads, 0)},
      {"backend", Text(&RunnerOptions::backend)},
      {"precision", Text(&RunnerOptions::precision)},
  };
  return setters;
}

std::string KnownFlags() {
  std::string names;
  for (const auto& entry : Setters()) names += " --" + entry.first;
  return names;
}

void CheckChoice(const std::string& flag, const std::string& value, const std::string& first,
                 const std::string& second) {
  if (value != first && value != second) {
    throw UsageError("--" + flag + " must be " + first + " or " + second + ", got '" + value + "'");
  }
}

}  // namespace

RunnerOptions ParseRunnerOptions(int argc, const char* const* argv) {
  RunnerOptions options;
  for (int index = 1; index < argc; ++index) {
    std::string argument = argv[index];
    if (argument == "--help" || argument == "-h") {
      options.show_help = true;
      continue;
    }
    if (argument.rfind("--", 0) != 0) {
      throw UsageError("unexpected argument '" + argument + "'; every option is a --flag");
    }
    std::string name = argument.substr(2);
    std::string value;
    const std::size_t equals = name.find('=');
    if (equals != std::string::npos) {
      value = name.substr(equals + 1);
      name = name.substr(0, equals);
    } else {
      if (index + 1 >= argc) throw UsageError("--" + name + " needs a value");
      value = argv[++index];
    }
    const auto setter = Setters().find(name);
    if (setter == Setters().end()) {
      throw UsageError("unknown flag --" + name + "; known flags:" + KnownFlags());
    }
    setter->second(&options, value);
  }
  if (options.show_help) return options;
  if (options.model_path.empty()) throw UsageError("--model_path (or --mindir_path) is required");
  if (options.dataset_path.empty()) throw UsageError("--dataset_path is required");
  if (options.device_type == "Ascend") options.device_type = "Ascend310";
  if (!options.device_type.empty()) CheckChoice("device_type", options.device_type, "CPU", "Ascend310");
  CheckChoice("cpu_dvpp", options.cpu_dvpp, "CPU", "DVPP");
  if (!options.backend.empty()) CheckChoice("backend", options.backend, "openvino", "opencv");
  CheckChoice("precision", options.precision, "f32", "bf16");
  if (options.output_dir.empty()) throw UsageError("--output_dir must not be empty");
  if (options.timing_dir.empty()) throw UsageError("--timing_dir must not be empty");
  return options;
}

std::string UsageText(const std::string& program) {
  std::ostringstream text;
  text << "usage: " << program << " --model_path MODEL --dataset_path IMAGE_DIR [options]\n"
       << "  --model_path PATH      exported model: ONNX or OpenVINO IR (.xml, its .bin beside it) for the cpu\n"
       << "                         build, MINDIR for the ascend310 build\n"
       << "                         (--mindir_path is accepted as an alias)\n"
       << "  --dataset_path DIR     folder of images (.jpg .jpeg .png .bmp), read in file-name order\n"
       << "  --image_height N       network input height (default 0: the model's)\n"
       << "  --image_width N        network input width (default 0: the model's)\n"
       << "  --batch_size N         images per run (default 0: the model's exported batch)\n"
       << "  --device_type TYPE     CPU or Ascend310 (default: the device this build is for)\n"
       << "  --device_id N          Ascend device (default 0)\n"
       << "  --cpu_dvpp MODE        Ascend310 preprocessing: CPU or DVPP (default CPU)\n"
       << "  --aipp_path PATH       AIPP config used with DVPP (default: aipp.cfg of ascend310_infer/)\n"
       << "  --output_dir DIR       result files <stem>_0.bin / <stem>_1.bin (default ./result_Files)\n"
       << "  --timing_dir DIR       timing summary test_perform_static.txt (default ./time_Result)\n"
       << "  --input_dump_dir DIR   also write each image's model input <stem>_input.bin (debugging)\n"
       << "  --threads N            inference threads (default 0: the library's default)\n"
       << "  --backend ENGINE       cpu build: openvino (ONNX or IR) or opencv (OpenCV DNN, ONNX only); default\n"
       << "                         openvino when this executable was built with OpenVINO, else opencv\n"
       << "  --precision P          OpenVINO's float precision: f32 or bf16 (default f32; bf16 needs a CPU with\n"
       << "                         native bf16 and moves scores by up to ~0.3); an INT8 model stays INT8 at either\n";
  return text.str();
}

}  // namespace ssd_infer
