// The row walk shared by every broadcasting element-wise kernel: the output in row-major
// order, one innermost row at a time, with each operand's offset advanced by its strides
// (0 on a broadcast dimension). `row(a_offset, b_offset, out_offset, inner, a_step, b_step)`
// handles one row. Rank is at most 8 (checked by the callers).
#pragma once
#include <cstdint>

namespace pyrt {

// Rows [row_begin, row_end) of that walk (a thread's share); the offsets start from
// row_begin's index.
template <typename Row>
inline void for_each_broadcast_row(int R, const int64_t* shape, const int64_t* sa, const int64_t* sb,
                                   int64_t row_begin, int64_t row_end, Row row) {
  const int64_t inner = shape[R - 1];
  int64_t idx[8] = {0};
  int64_t oa = 0, ob = 0;
  for (int64_t d = R - 2, rest = row_begin; d >= 0; --d) {
    idx[d] = rest % shape[d];
    rest /= shape[d];
    oa += idx[d] * sa[d];
    ob += idx[d] * sb[d];
  }
  for (int64_t r = row_begin; r < row_end; ++r) {
    row(oa, ob, r * inner, inner, sa[R - 1], sb[R - 1]);
    for (int d = R - 2; d >= 0; --d) {
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < shape[d]) break;
      oa -= sa[d] * shape[d];
      ob -= sb[d] * shape[d];
      idx[d] = 0;
    }
  }
}

template <typename Row>
inline void for_each_broadcast_row(int R, const int64_t* shape, const int64_t* sa, const int64_t* sb, int64_t total,
                                   Row row) {
  for_each_broadcast_row(R, shape, sa, sb, int64_t(0), shape[R - 1] ? total / shape[R - 1] : 0, row);
}

}  // namespace pyrt
