// 3x3 depthwise convolution on CPU for MindSpore's aot Custom operator: float32, NCHW, TensorFlow
// SAME padding (the extra pad row/column at the bottom/right), stride 1 or 2.
//
// Why it exists: MindSpore hands oneDNN plain NCHW tensors, and oneDNN runs a grouped convolution in
// that layout as im2col + GEMM with one channel per group, 1-3 GMAC/s. These loops work one channel
// plane at a time, in cache, and vectorize over the output row.
//
// Forward sums the nine taps of each output in the same order as the im2col GEMM (kh, then kw, each a
// fused multiply-add starting from zero), so its outputs are bit-identical to MindSpore's Conv2D
// with oneDNN at ONEDNN_MAX_CPU_ISA=AVX2, the cap train.py sets on CPU.
// The two gradients sum in their own order: equal to oneDNN's up to float32 rounding.
//
// Entry points (MindSpore's aot signature): DepthwiseForwardS{1,2}(x, w) -> y,
// DepthwiseInputGradS{1,2}(dy, w, x) -> dx and DepthwiseFilterGradS{1,2}(dy, x, w) -> dw; x is only
// read for its shape by the input gradient, w only for its shape by the filter gradient.
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

namespace {

constexpr int kTaps = 9;

struct Geometry {
  int64_t batch, channels, height, width;
  int64_t out_height, out_width;
  int64_t pad_top, pad_left;
  int64_t padded_height, padded_width;  // the input plane with its SAME padding, as the taps read it
};

Geometry geometry(const int64_t *input_shape, const int64_t *output_shape, int stride) {
  Geometry g{};
  g.batch = input_shape[0];
  g.channels = input_shape[1];
  g.height = input_shape[2];
  g.width = input_shape[3];
  g.out_height = output_shape[2];
  g.out_width = output_shape[3];
  g.padded_height = (g.out_height - 1) * stride + 3;
  g.padded_width = (g.out_width - 1) * stride + 3;
  g.pad_top = std::max<int64_t>(g.padded_height - g.height, 0) / 2;
  g.pad_left = std::max<int64_t>(g.padded_width - g.width, 0) / 2;
  return g;
}

// MindSpore pins each of its kernel threads to one core and a new thread inherits the pin, so the
// workers take the process's CPU set (its main thread's) to run beside the caller. Workers live for
// one call: none is left spinning to compete with MindSpore's own threads between kernels.
template <class Body>
void parallel_chunks(int64_t items, const Body &body) {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (sched_getaffinity(getpid(), sizeof(cpus), &cpus) != 0) CPU_SET(0, &cpus);
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(CPU_COUNT(&cpus), items));
  const int64_t chunk = (items + threads - 1) / threads;
  std::vector<std::thread> workers;
  for (int64_t begin = chunk; begin < items; begin += chunk) {
    const int64_t end = std::min(items, begin + chunk);
    workers.emplace_back([&body, &cpus, begin, end] {
      pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
      body(begin, end);
    });
  }
  body(0, std::min(items, chunk));
  for (auto &worker : workers) worker.join();
}

void pad_plane(const Geometry &g, const float *plane, float *padded) {
  std::fill(padded, padded + g.padded_height * g.padded_width, 0.0f);
  const int64_t rows = std::min(g.height, g.padded_height - g.pad_top);
  const int64_t cols = std::min(g.width, g.padded_width - g.pad_left);
  for (int64_t y = 0; y < rows; ++y) {
    std::memcpy(padded + (y + g.pad_top) * g.padded_width + g.pad_left, plane + y * g.width, cols * sizeof(float));
  }
}

template <int S>
void forward_plane(const Geometry &g, const float *padded, const float *taps, float *out) {
  for (int64_t oy = 0; oy < g.out_height; ++oy) {
    float *row = out + oy * g.out_width;
    std::fill(row, row + g.out_width, 0.0f);
    for (int kh = 0; kh < 3; ++kh) {
      const float *in_row = padded + (oy * S + kh) * g.padded_width;
      for (int kw = 0; kw < 3; ++kw) {
        const float tap = taps[kh * 3 + kw];
        const float *src = in_row + kw;
        for (int64_t ox = 0; ox < g.out_width; ++ox) row[ox] += tap * src[ox * S];
      }
    }
  }
}

template <int S>
void input_grad_plane(const Geometry &g, const float *dy, const float *taps, float *padded_grad, float *dx) {
  std::fill(padded_grad, padded_grad + g.padded_height * g.padded_width, 0.0f);
  for (int64_t oy = 0; oy < g.out_height; ++oy) {
    const float *dy_row = dy + oy * g.out_width;
    for (int kh = 0; kh < 3; ++kh) {
      float *grad_row = padded_grad + (oy * S + kh) * g.padded_width;
      for (int kw = 0; kw < 3; ++kw) {
        const float tap = taps[kh * 3 + kw];
        float *dst = grad_row + kw;
        for (int64_t ox = 0; ox < g.out_width; ++ox) dst[ox * S] += tap * dy_row[ox];
      }
    }
  }
  // Input pixels that no tap reads (a stride-2 layer's last row/column of an even input) get zero.
  std::fill(dx, dx + g.height * g.width, 0.0f);
  const int64_t rows = std::min(g.height, g.padded_height - g.pad_top);
  const int64_t cols = std::min(g.width, g.padded_width - g.pad_left);
  for (int64_t y = 0; y < rows; ++y) {
    std::memcpy(dx + y * g.width, padded_grad + (y + g.pad_top) * g.padded_width + g.pad_left, cols * sizeof(float));
  }
}

// Adds one plane's products to the nine taps' sums, kept per output column (sums holds 9 rows of
// out_width) so that the inner loop vectorizes; the columns are added up once per channel.
template <int S>
void filter_grad_plane(const Geometry &g, const float *padded, const float *dy, float *sums) {
  for (int64_t oy = 0; oy < g.out_height; ++oy) {
    const float *dy_row = dy + oy * g.out_width;
    for (int kh = 0; kh < 3; ++kh) {
      const float *in_row = padded + (oy * S + kh) * g.padded_width;
      for (int kw = 0; kw < 3; ++kw) {
        float *sum_row = sums + (kh * 3 + kw) * g.out_width;
        const float *src = in_row + kw;
        for (int64_t ox = 0; ox < g.out_width; ++ox) sum_row[ox] += dy_row[ox] * src[ox * S];
      }
    }
  }
}

template <int S>
int forward(void **params, int64_t **shapes) {
  const auto *x = static_cast<const float *>(params[0]);
  const auto *w = static_cast<const float *>(params[1]);
  auto *y = static_cast<float *>(params[2]);
  const Geometry g = geometry(shapes[0], shapes[2], S);
  parallel_chunks(g.batch * g.channels, [&](int64_t begin, int64_t end) {
    std::vector<float> padded(g.padded_height * g.padded_width);
    for (int64_t plane = begin; plane < end; ++plane) {
      pad_plane(g, x + plane * g.height * g.width, padded.data());
      forward_plane<S>(g, padded.data(), w + (plane % g.channels) * kTaps, y + plane * g.out_height * g.out_width);
    }
  });
  return 0;
}

template <int S>
int input_grad(void **params, int64_t **shapes) {
  const auto *dy = static_cast<const float *>(params[0]);
  const auto *w = static_cast<const float *>(params[1]);
  auto *dx = static_cast<float *>(params[3]);
  const Geometry g = geometry(shapes[2], shapes[0], S);
  parallel_chunks(g.batch * g.channels, [&](int64_t begin, int64_t end) {
    std::vector<float> padded_grad(g.padded_height * g.padded_width);
    for (int64_t plane = begin; plane < end; ++plane) {
      input_grad_plane<S>(g, dy + plane * g.out_height * g.out_width, w + (plane % g.channels) * kTaps,
                          padded_grad.data(), dx + plane * g.height * g.width);
    }
  });
  return 0;
}

template <int S>
int filter_grad(void **params, int64_t **shapes) {
  const auto *dy = static_cast<const float *>(params[0]);
  const auto *x = static_cast<const float *>(params[1]);
  auto *dw = static_cast<float *>(params[3]);
  const Geometry g = geometry(shapes[1], shapes[0], S);
  parallel_chunks(g.channels, [&](int64_t begin, int64_t end) {
    std::vector<float> padded(g.padded_height * g.padded_width);
    std::vector<float> sums(kTaps * g.out_width);
    for (int64_t channel = begin; channel < end; ++channel) {
      std::fill(sums.begin(), sums.end(), 0.0f);
      for (int64_t image = 0; image < g.batch; ++image) {
        const int64_t plane = image * g.channels + channel;
        pad_plane(g, x + plane * g.height * g.width, padded.data());
        filter_grad_plane<S>(g, padded.data(), dy + plane * g.out_height * g.out_width, sums.data());
      }
      for (int tap = 0; tap < kTaps; ++tap) {
        const float *sum_row = sums.data() + tap * g.out_width;
        dw[channel * kTaps + tap] = std::accumulate(sum_row, sum_row + g.out_width, 0.0f);
      }
    }
  });
  return 0;
}

// Refuses what the loops do not handle (MindSpore passes shapes the Python side already checked).
bool float32_nchw(int nparam, int *ndims, const char **dtypes) {
  for (int i = 0; i < nparam; ++i) {
    if (ndims[i] != 4 || std::strcmp(dtypes[i], "float32") != 0) return false;
  }
  return true;
}

}  // namespace

#define SSD_DEPTHWISE_ENTRY(name, impl)                                                                 \
  extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, \
                      void *, void *) {                                                               \
    return float32_nchw(nparam, ndims, dtypes) ? impl(params, shapes) : 1;                            \
  }

SSD_DEPTHWISE_ENTRY(DepthwiseForwardS1, forward<1>)
SSD_DEPTHWISE_ENTRY(DepthwiseForwardS2, forward<2>)
SSD_DEPTHWISE_ENTRY(DepthwiseInputGradS1, input_grad<1>)
SSD_DEPTHWISE_ENTRY(DepthwiseInputGradS2, input_grad<2>)
SSD_DEPTHWISE_ENTRY(DepthwiseFilterGradS1, filter_grad<1>)
SSD_DEPTHWISE_ENTRY(DepthwiseFilterGradS2, filter_grad<2>)
