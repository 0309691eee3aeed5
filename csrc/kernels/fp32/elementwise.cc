#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../broadcast.h"
#include "pyruntime/errors.h"

namespace pyrt {
namespace {

// Integer Div truncates toward zero like ONNX's reference (numpy would floor); division
// by zero yields 0 instead of trapping.
// Signed integers wrap like numpy (computed unsigned: no undefined overflow), and
// INT_MIN / -1 wraps instead of trapping.
template <int Op, typename T>
inline T apply(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    if constexpr (Op == 0) return T(U(a) + U(b));
    else if constexpr (Op == 1) return T(U(a) - U(b));
    else if constexpr (Op == 2) return T(U(a) * U(b));
    else if constexpr (std::is_signed_v<T>) return b == 0 ? T(0) : b == T(-1) ? T(U(0) - U(a)) : T(a / b);
    else return b == 0 ? T(0) : T(a / b);
  } else {
    if constexpr (Op == 0) return a + b;
    else if constexpr (Op == 1) return a - b;
    else if constexpr (Op == 2) return a * b;
    else return a / b;
  }
}

void check_rank(int R, const char* op) {
  if (R > 8) throw UnsupportedError(std::string(op) + " on a tensor of rank " + std::to_string(R) + "; at most 8");
}

// The op is a template parameter so every inner loop is a plain vectorisable loop.
template <int Op, typename T>
void binary_typed(const Step& s, const StepIO& io) {
  const int R = int(s.ints[1]);
  check_rank(R, "element-wise op");
  const int64_t* shape = &s.ints[2];
  const int64_t* sa = shape + R;
  const int64_t* sb = sa + R;
  const T* a = static_cast<const T*>(io.in[0]);
  const T* b = static_cast<const T*>(io.in[1]);
  T* y = static_cast<T*>(io.out[0]);
  const int64_t total = io.out_v[0]->elements();
  if (total == 0) return;
  if (R == 0) {
    y[0] = apply<Op, T>(a[0], b[0]);
    return;
  }
  for_each_broadcast_row(R, shape, sa, sb, total, [&](int64_t oa, int64_t ob, int64_t at, int64_t inner, int64_t ia,
                                                     int64_t ib) {
    const T* ap = a + oa;
    const T* bp = b + ob;
    T* yp = y + at;
    if (ia == 1 && ib == 1) {
      for (int64_t j = 0; j < inner; ++j) yp[j] = apply<Op, T>(ap[j], bp[j]);
    } else if (ia == 1 && ib == 0) {
      const T bv = *bp;
      for (int64_t j = 0; j < inner; ++j) yp[j] = apply<Op, T>(ap[j], bv);
    } else if (ia == 0 && ib == 1) {
      const T av = *ap;
      for (int64_t j = 0; j < inner; ++j) yp[j] = apply<Op, T>(av, bp[j]);
    } else {
      for (int64_t j = 0; j < inner; ++j) yp[j] = apply<Op, T>(ap[j * ia], bp[j * ib]);
    }
  });
}

template <typename T>
void binary_dispatch(const Step& s, const StepIO& io) {
  switch (s.ints[0]) {
    case 0: return binary_typed<0, T>(s, io);
    case 1: return binary_typed<1, T>(s, io);
    case 2: return binary_typed<2, T>(s, io);
    default: return binary_typed<3, T>(s, io);
  }
}

}  // namespace

void binary_op(const Step& s, const StepIO& io) {
  switch (io.out_v[0]->dtype) {
    case DType::f32: return binary_dispatch<float>(s, io);
    case DType::s32: return binary_dispatch<int32_t>(s, io);
    case DType::s64: return binary_dispatch<int64_t>(s, io);
    case DType::u8: return binary_dispatch<uint8_t>(s, io);
    case DType::s8: return binary_dispatch<int8_t>(s, io);
    default: throw UnsupportedError("binary op on this dtype");
  }
}

void unary_op(const Step& s, const StepIO& io) {
  const float* x = static_cast<const float*>(io.in[0]);
  float* y = static_cast<float*>(io.out[0]);
  const int64_t n = io.out_v[0]->elements();
  switch (s.ints[0]) {
    case 0:
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : (x[i] == x[i] ? 0.0f : x[i]);
      break;
    case 1: {
      // Bounds may be runtime inputs (opset >= 11); the floats hold the defaults.
      const float lo = io.in.size() > 1 && io.in[1] ? *static_cast<const float*>(io.in[1]) : float(s.floats[0]);
      const float hi = io.in.size() > 2 && io.in[2] ? *static_cast<const float*>(io.in[2]) : float(s.floats[1]);
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] != x[i] ? x[i] : std::min(std::max(x[i], lo), hi);
      break;
    }
    case 2:
      for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
      break;
    default:
      for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
  }
}

void softmax_op(const Step& s, const StepIO& io) {
  const int64_t outer = s.ints[0], len = s.ints[1], inner = s.ints[2];
  const float* x = static_cast<const float*>(io.in[0]);
  float* y = static_cast<float*>(io.out[0]);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float* xs = x + o * len * inner + i;
      float* ys = y + o * len * inner + i;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < len; ++j) mx = std::max(mx, xs[j * inner]);
      float sum = 0;
      for (int64_t j = 0; j < len; ++j) sum += (ys[j * inner] = std::exp(xs[j * inner] - mx));
      for (int64_t j = 0; j < len; ++j) ys[j * inner] /= sum;
    }
}

void reduce_mean_op(const Step& s, const StepIO& io) {
  const int64_t outer = s.ints[0], len = s.ints[1], inner = s.ints[2];
  const float* x = static_cast<const float*>(io.in[0]);
  float* y = static_cast<float*>(io.out[0]);
  for (int64_t o = 0; o < outer; ++o) {
    float* yo = y + o * inner;
    for (int64_t i = 0; i < inner; ++i) yo[i] = 0;
    for (int64_t j = 0; j < len; ++j) {
      const float* xs = x + (o * len + j) * inner;
      for (int64_t i = 0; i < inner; ++i) yo[i] += xs[i];
    }
    const float scale = len ? 1.0f / float(len) : std::numeric_limits<float>::quiet_NaN();
    for (int64_t i = 0; i < inner; ++i) yo[i] *= scale;
  }
}

void batch_norm_op(const Step& s, const StepIO& io) {
  const int64_t N = s.ints[0], C = s.ints[1], inner = s.ints[2];
  const float eps = float(s.floats[0]);
  const float* x = static_cast<const float*>(io.in[0]);
  const float* scale = static_cast<const float*>(io.in[1]);
  const float* bias = static_cast<const float*>(io.in[2]);
  const float* mean = static_cast<const float*>(io.in[3]);
  const float* var = static_cast<const float*>(io.in[4]);
  float* y = static_cast<float*>(io.out[0]);
  for (int64_t c = 0; c < C; ++c) {
    const float g = scale[c] / std::sqrt(var[c] + eps), b = bias[c] - mean[c] * g;
    for (int64_t n = 0; n < N; ++n) {
      const float* xs = x + (n * C + c) * inner;
      float* ys = y + (n * C + c) * inner;
      for (int64_t i = 0; i < inner; ++i) ys[i] = xs[i] * g + b;
    }
  }
}

void copy_op(const Step&, const StepIO& io) {
  const size_t bytes = size_t(io.out_v[0]->elements()) * dtype_size(io.out_v[0]->dtype);
  if (io.out[0] != io.in[0] && bytes) std::memmove(io.out[0], io.in[0], bytes);
}

namespace {

// A transpose with size-1 axes dropped and input axes that stay neighbours merged: the
// NHWC -> NCHW copy before a Flatten becomes [N, H*W, C] -> [N, C, H*W] (and N = 1 goes).
struct CanonicalTranspose {
  int rank = 0;
  int64_t in_shape[8];
  int perm[8];
};

CanonicalTranspose canonical_transpose(int R, const int64_t* in_shape, const int64_t* perm) {
  int kept_index[8];
  int kept = 0;
  for (int d = 0; d < R; ++d) kept_index[d] = in_shape[d] == 1 ? -1 : kept++;
  int group_first[8], group_of_axis[8];  // groups of kept input axes, in output order
  int64_t group_size[8];
  int groups = 0, last = -2;
  for (int k = 0; k < R; ++k) {
    const int a = int(perm[k]), ka = kept_index[a];
    if (ka < 0) continue;
    if (ka != last + 1 || groups == 0) {
      group_first[groups] = ka;
      group_size[groups++] = 1;
    }
    group_size[groups - 1] *= in_shape[a];
    group_of_axis[ka] = groups - 1;
    last = ka;
  }
  CanonicalTranspose t;
  t.rank = groups;
  int rank_of_group[8];
  for (int ka = 0, pos = 0; ka < kept; ++ka) {  // groups in input order
    const int g = group_of_axis[ka];
    if (group_first[g] != ka) continue;
    t.in_shape[pos] = group_size[g];
    rank_of_group[g] = pos++;
  }
  for (int g = 0; g < groups; ++g) t.perm[g] = rank_of_group[g];
  return t;
}

// y[b][c][r] = x[b][r][c] in square tiles: each tile reads kTile short rows and writes
// kTile short rows, where the element-by-element walk strides through one side.
template <typename T>
void transpose_2d_tiled(const T* x, T* y, int64_t batch, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 8;
  for (int64_t b = 0; b < batch; ++b, x += rows * cols, y += rows * cols)
    for (int64_t r0 = 0; r0 < rows; r0 += kTile)
      for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
        const T* src = x + r0 * cols + c0;
        T* dst = y + c0 * rows + r0;
        if (r0 + kTile <= rows && c0 + kTile <= cols) {
          for (int64_t c = 0; c < kTile; ++c)
            for (int64_t r = 0; r < kTile; ++r) dst[c * rows + r] = src[r * cols + c];
          continue;
        }
        const int64_t nr = std::min(kTile, rows - r0), nc = std::min(kTile, cols - c0);
        for (int64_t c = 0; c < nc; ++c)
          for (int64_t r = 0; r < nr; ++r) dst[c * rows + r] = src[r * cols + c];
      }
}

template <typename T>
void transpose_general(const CanonicalTranspose& t, const T* x, T* y) {
  int64_t in_strides[8], out_shape[8], src_stride[8];
  int64_t st = 1, total = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    in_strides[d] = st;
    st *= t.in_shape[d];
  }
  for (int d = 0; d < t.rank; ++d) {
    out_shape[d] = t.in_shape[t.perm[d]];
    src_stride[d] = in_strides[t.perm[d]];
    total *= out_shape[d];
  }
  // The innermost output axis is a strided run; the outer ones step like an odometer.
  const int inner = t.rank - 1;
  int64_t idx[8] = {0}, off = 0;
  for (int64_t i = 0; i < total; i += out_shape[inner]) {
    for (int64_t j = 0; j < out_shape[inner]; ++j) y[i + j] = x[off + j * src_stride[inner]];
    for (int d = inner - 1; d >= 0; --d) {
      off += src_stride[d];
      if (++idx[d] < out_shape[d]) break;
      off -= src_stride[d] * out_shape[d];
      idx[d] = 0;
    }
  }
}

template <typename T>
void transpose_typed(const CanonicalTranspose& t, const void* in, void* out) {
  const T* x = static_cast<const T*>(in);
  T* y = static_cast<T*>(out);
  if (t.rank == 2 && t.perm[0] == 1) return transpose_2d_tiled(x, y, 1, t.in_shape[0], t.in_shape[1]);
  if (t.rank == 3 && t.perm[0] == 0 && t.perm[1] == 2)
    return transpose_2d_tiled(x, y, t.in_shape[0], t.in_shape[1], t.in_shape[2]);
  transpose_general(t, x, y);
}

}  // namespace

void transpose_op(const Step& s, const StepIO& io) {
  const int R = int(s.ints[0]);
  check_rank(R, "Transpose");
  const CanonicalTranspose t = canonical_transpose(R, &s.ints[1], &s.ints[1 + R]);
  const size_t bytes = size_t(io.out_v[0]->elements()) * dtype_size(io.out_v[0]->dtype);
  if (t.rank <= 1) {  // nothing moves
    if (bytes) std::memcpy(io.out[0], io.in[0], bytes);
    return;
  }
  switch (dtype_size(io.out_v[0]->dtype)) {
    case 1: return transpose_typed<uint8_t>(t, io.in[0], io.out[0]);
    case 4: return transpose_typed<uint32_t>(t, io.in[0], io.out[0]);
    case 8: return transpose_typed<uint64_t>(t, io.in[0], io.out[0]);
    default: throw UnsupportedError("Transpose of this element size");
  }
}

void concat_op(const Step& s, const StepIO& io) {
  const int64_t outer = s.ints[0];
  const size_t n_in = io.in.size();
  int64_t out_row = 0;
  for (size_t i = 0; i < n_in; ++i) out_row += s.ints[1 + i];
  uint8_t* y = static_cast<uint8_t*>(io.out[0]);
  for (int64_t o = 0; o < outer; ++o)
    for (size_t i = 0; i < n_in; ++i) {
      const int64_t row = s.ints[1 + i];
      if (row) std::memcpy(y, static_cast<const uint8_t*>(io.in[i]) + o * row, size_t(row));
      y += row;
    }
}

void gather_op(const Step& s, const StepIO& io) {
  const int64_t outer = s.ints[0], axis_len = s.ints[1], inner = s.ints[2], n_idx = s.ints[3];
  const uint8_t* x = static_cast<const uint8_t*>(io.in[0]);
  uint8_t* y = static_cast<uint8_t*>(io.out[0]);
  const bool idx64 = io.in_v[1]->dtype == DType::s64;
  for (int64_t j = 0; j < n_idx; ++j) {
    int64_t k = idx64 ? static_cast<const int64_t*>(io.in[1])[j] : static_cast<const int32_t*>(io.in[1])[j];
    if (k < 0) k += axis_len;
    if (k < 0 || k >= axis_len)
      throw InputError("Gather index " + std::to_string(k) + " is outside the axis of length " +
                       std::to_string(axis_len));
  }
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < n_idx; ++j) {
      int64_t k = idx64 ? static_cast<const int64_t*>(io.in[1])[j] : static_cast<const int32_t*>(io.in[1])[j];
      if (k < 0) k += axis_len;
      std::memcpy(y + (o * n_idx + j) * inner, x + (o * axis_len + k) * inner, size_t(inner));
    }
}

void matmul_f32_op(const Step& s, const StepIO& io) {
  const int64_t batches = s.ints[0], M = s.ints[1], K = s.ints[2], N = s.ints[3];
  const float* a = static_cast<const float*>(io.in[0]);
  const float* b = static_cast<const float*>(io.in[1]);
  float* y = static_cast<float*>(io.out[0]);
  for (int64_t bi = 0; bi < batches; ++bi) {
    const float* ab = a + s.ints[4 + 2 * bi];
    const float* bb = b + s.ints[5 + 2 * bi];
    float* yb = y + bi * M * N;
    for (int64_t m = 0; m < M; ++m) {
      float* row = yb + m * N;
      for (int64_t n = 0; n < N; ++n) row[n] = 0;
      for (int64_t k = 0; k < K; ++k) {
        const float av = ab[m * K + k];
        const float* brow = bb + k * N;
        for (int64_t n = 0; n < N; ++n) row[n] += av * brow[n];
      }
    }
  }
}

}  // namespace pyrt
