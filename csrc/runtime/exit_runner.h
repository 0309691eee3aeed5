// Per-sample early exit in one native call (DESIGN.md, `pyruntime.exits` version 1).
//
// The graph is split into segments; segment k ends with gate k's class scores. After it,
// each row's rule is evaluated; rows that fire are written to their place in the output,
// the others are compacted and only they run the next segment. Values one segment hands to
// a later one live in "slots" (slot 0 is the model's input), one row per sample.
//
// Programs are planned for fixed shapes, and the number of rows that survive a gate is
// only known at run time. So each segment is planned for batches of 2^b rows, and a
// batch of n rows runs as the chunks of n's binary expansion (13 = 8 + 4 + 1): no
// padding, at most log2(n) + 1 plans per segment. Segments never mix rows (checked at
// load), so a row's result does not depend on the chunk it ran in.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "program.h"

namespace pyrt {

enum class ExitRule : int { none = -1, margin = 0, max = 1 };

struct ExitSegment {
  std::vector<std::shared_ptr<const Program>> by_bucket;  // [b]: planned for 2^b rows
  std::vector<int> in_slots;   // program input i reads slot in_slots[i]
  std::vector<int> out_slots;  // program output j + 1 fills slot out_slots[j]
  ExitRule rule = ExitRule::none;
};

class ExitRunner {
 public:
  // slot_row_bytes[s]: bytes of one row of slot s; slot_last_use[s]: the last segment that
  // reads it (slots nobody reads later are not compacted). Scores are output 0 of every
  // segment: `classes` values of `score_dtype` per row.
  ExitRunner(std::vector<ExitSegment> segments, std::vector<int64_t> slot_row_bytes,
             std::vector<int> slot_last_use, int64_t classes, DType score_dtype);

  // The largest bucket every segment has a plan for: batches up to 2^max_bucket()+1 - 1.
  int max_bucket() const;
  int64_t classes() const { return classes_; }
  DType score_dtype() const { return score_dtype_; }

  // x: n rows of slot 0. out: n rows of scores; exit_index: n. thresholds: one per gate.
  void run(const void* x, int64_t n, const std::vector<double>& thresholds, void* out, int64_t* exit_index,
           int threads, Isa isa) const;

 private:
  std::vector<ExitSegment> segments_;
  std::vector<int64_t> slot_row_bytes_;
  std::vector<int> slot_last_use_;
  int64_t classes_;
  DType score_dtype_;
};

// Does the rule fire on one row of scores? margin: top1 - top2 >= t; max: top1 >= t.
// A row holding NaN never fires (as numpy's comparisons with NaN are false).
bool exit_rule_fires(ExitRule rule, const void* row, DType dtype, int64_t classes, double threshold);

}  // namespace pyrt
