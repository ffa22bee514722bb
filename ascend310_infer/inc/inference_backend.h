// The one interface between the runner and an inference engine: OpenVINO or OpenCV DNN (cpu build, chosen
// with --backend), or MindSpore on the Ascend310 (ascend310 build).
#ifndef SSD_INFER_INFERENCE_BACKEND_H_
#define SSD_INFER_INFERENCE_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runner_options.h"

namespace ssd_infer {

// Up to BatchSize() image files; the backend pads a shorter (last) batch itself.
struct Batch {
  std::vector<std::string> image_paths;
};

// The two model outputs for one image, row-major float32 as the model wrote them.
struct ImageDetections {
  std::vector<float> boxes;   // N x 4, [ymin, xmin, ymax, xmax] in [0, 1]
  std::vector<float> scores;  // N x num_classes
};

// Wall time of one Run, split so the summary can tell image decoding from the network.
struct BatchTiming {
  double preprocess_ms = 0.0;
  double inference_ms = 0.0;
};

class InferenceBackend {
 public:
  virtual ~InferenceBackend() = default;
  // The batch the model was exported with: every Run feeds exactly this many images.
  virtual int64_t BatchSize() const = 0;
  // One line for the log: engine, model, input shape, preprocessing.
  virtual std::string Description() const = 0;
  // Preprocesses and runs the images of `batch`; returns one entry per image (padding dropped).
  virtual std::vector<ImageDetections> Run(const Batch& batch, BatchTiming* timing) = 0;
};

// The device this executable was built for ("CPU" or "Ascend310").
std::string BuiltDeviceType();

// The engine of `options` (cpu build: --backend) among those this executable was built with, loaded with
// the model of `options`.
// Throws std::runtime_error with the file and the fix when the model or options do not fit.
std::unique_ptr<InferenceBackend> CreateBackend(const RunnerOptions& options);

}  // namespace ssd_infer

#endif  // SSD_INFER_INFERENCE_BACKEND_H_
