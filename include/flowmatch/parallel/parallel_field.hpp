/// @file parallel_field.hpp
/// @brief A velocity field evaluated over a ThreadPool, the batch split into column chunks.
///
/// ParallelField wraps a field and splits every batch x (d×N) into fixed chunks of
/// chunk_columns consecutive columns (the last chunk shorter), evaluating the chunks on the
/// threads of a ThreadPool. The chunks depend only on N and chunk_columns, never on the number
/// of threads, and each chunk is one call of the wrapped field on its columns; so the result
/// is the same bit for bit with 1 thread or with many. It differs from one call on the whole
/// batch only by rounding (a matrix product may order its sums differently for other sizes).
///
/// The wrapper offers what the wrapped field offers, detected at compile time: every plain and
/// conditional member of the field protocol (field/capabilities.hpp), each argument after t
/// split into the same column chunks as x (conditions, tangents, outputs). The solvers and
/// likelihood functions therefore use it as they use the field itself.
///
/// The wrapped field is called concurrently from several threads (const calls on different
/// chunks), so it must be safe for that: Mlp is (each thread uses its own workspace), a
/// wrapper that keeps buffers between calls, such as GuidedField, is not. Chunks of a few
/// hundred columns keep each thread's working set in cache; a chunk much smaller than that
/// spends its time on per-call overhead.
///
/// Ownership as every adapter (field_adapter.hpp): the field by value, or std::cref(field) to
/// refer to it. The pool is referenced and must outlive the wrapper.
#pragma once

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/field_adapter.hpp"
#include "flowmatch/parallel/thread_pool.hpp"

namespace flowmatch {

/// A field evaluated chunk by chunk on a thread pool (see the file comment).
template <class Field>
class ParallelField : public FieldAdapter<ParallelField<Field>, Field> {
  using Base = FieldAdapter<ParallelField<Field>, Field>;

 public:
  /// @param field the wrapped field (by value, or std::cref(field)).
  /// @param pool the threads (referenced; must outlive the wrapper).
  /// @param chunk_columns the number of columns per chunk, >= 1.
  /// @throws std::invalid_argument if chunk_columns < 1.
  ParallelField(Field field, ThreadPool& pool, Index chunk_columns = 256)
      : Base(std::move(field)), pool_(&pool), chunk_columns_(chunk_columns) {
    detail::require_count<Index>("ParallelField: chunk_columns", chunk_columns, 1);
  }

  /// The pool the chunks run on.
  [[nodiscard]] ThreadPool& pool() const { return *pool_; }
  /// The number of columns per chunk.
  [[nodiscard]] Index chunk_columns() const { return chunk_columns_; }

  /// Every capability of the wrapped field, plain and conditional.
  template <class Tag, class Scalar>
  static constexpr bool offers = Tag::template offered_by<typename Base::wrapped_type, Scalar>;
  template <class Tag, class Scalar>
  static constexpr bool offers_conditionally =
      Tag::template offered_conditionally_by<typename Base::wrapped_type, Scalar>;

  /// Calls the wrapped field's member on each chunk of columns of x and of every argument.
  template <class Tag, class Scalar, class... Args>
  void forward(Tag, Scalar t, const ConstMatrixRef<Scalar>& x, Args... args) const {
    const Index samples = x.cols();
    // An empty batch is one empty chunk, so the field still validates its arguments.
    const Index chunks = std::max<Index>(1, (samples + chunk_columns_ - 1) / chunk_columns_);
    pool_->parallel_for(chunks, [&](Index chunk) {
      const Index begin = chunk * chunk_columns_;
      const Index count = std::min(chunk_columns_, samples - begin);
      Tag::call(this->field(), t, ConstMatrixRef<Scalar>(x.middleCols(begin, count)),
                columns(args, begin, count)...);
    });
  }

 private:
  // The columns [begin, begin + count) of a batch argument (the entries, for a vector).
  template <class Ref>
  static auto columns(Ref& argument, Index begin, Index count) {
    if constexpr (Ref::ColsAtCompileTime == 1) {
      return Ref(argument.segment(begin, count));
    } else {
      return Ref(argument.middleCols(begin, count));
    }
  }

  ThreadPool* pool_;
  Index chunk_columns_;
};

/// A ParallelField over @p field and @p pool with chunks of @p chunk_columns columns.
template <class Field>
ParallelField<Field> parallel_field(Field field, ThreadPool& pool, Index chunk_columns = 256) {
  return ParallelField<Field>(std::move(field), pool, chunk_columns);
}

}  // namespace flowmatch
