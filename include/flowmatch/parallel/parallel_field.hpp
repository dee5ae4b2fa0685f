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
/// The wrapper offers what the wrapped field offers, detected at compile time: in-place
/// evaluation (always), the conditional form `(t, x, cond, out)` with the conditions split
/// like x, and the members `divergence`, `jvp`, `vjp`, `divergence_gradient` and their
/// conditional forms. The solvers and likelihood functions therefore use it as they use the
/// field itself.
///
/// The wrapped field is called concurrently from several threads (const calls on different
/// chunks), so it must be safe for that: Mlp is (each thread uses its own workspace), a
/// wrapper that keeps buffers between calls, such as GuidedField, is not. Chunks of a few
/// hundred columns keep each thread's working set in cache; a chunk much smaller than that
/// spends its time on per-call overhead.
///
/// Lifetime: the wrapper holds the field and the pool by reference; both must outlive it.
#pragma once

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/conditional_field.hpp"
#include "flowmatch/field/velocity_field.hpp"
#include "flowmatch/parallel/thread_pool.hpp"

namespace flowmatch {

/// A field evaluated chunk by chunk on a thread pool (see the file comment).
template <class Field>
class ParallelField {
 public:
  /// @param field the wrapped field (referenced; must outlive the wrapper).
  /// @param pool the threads (referenced; must outlive the wrapper).
  /// @param chunk_columns the number of columns per chunk, >= 1.
  /// @throws std::invalid_argument if chunk_columns < 1.
  ParallelField(const Field& field, ThreadPool& pool, Index chunk_columns = 256)
      : field_(&field), pool_(&pool), chunk_columns_(chunk_columns) {
    if (chunk_columns < 1) {
      throw std::invalid_argument("ParallelField: chunk_columns is " +
                                  detail::to_text(chunk_columns) + ", expected at least 1");
    }
  }

  /// The wrapped field.
  [[nodiscard]] const Field& field() const { return *field_; }
  /// The pool the chunks run on.
  [[nodiscard]] ThreadPool& pool() const { return *pool_; }
  /// The number of columns per chunk.
  [[nodiscard]] Index chunk_columns() const { return chunk_columns_; }

  /// u_t(x) into @p out (same shape as x).
  template <class Scalar>
  requires VelocityField<Field, Scalar>
  void operator()(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                  std::type_identity_t<MatrixRef<Scalar>> out) const {
    require_batch_shape("out", out, x.rows(), x.cols());
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      evaluate_velocity<Scalar>(*field_, t, x.middleCols(begin, columns),
                                out.middleCols(begin, columns));
    });
  }

  /// u_t(x | cond) into @p out, cond (k×N) split like x.
  template <class Scalar>
  requires ConditionalVelocityField<Field, Scalar>
  void operator()(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                  const std::type_identity_t<ConstMatrixRef<Scalar>>& cond,
                  std::type_identity_t<MatrixRef<Scalar>> out) const {
    require_batch_shape("cond", cond, cond.rows(), x.cols());
    require_batch_shape("out", out, x.rows(), x.cols());
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      evaluate_conditional_velocity<Scalar>(*field_, t, x.middleCols(begin, columns),
                                            cond.middleCols(begin, columns),
                                            out.middleCols(begin, columns));
    });
  }

  /// ∇·u_t at each sample into @p out (length N), from the field's divergence member.
  template <class Scalar>
  requires HasDivergence<Field, Scalar>
  void divergence(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                  std::type_identity_t<VectorRef<Scalar>> out) const {
    require_batch_shape("divergence out", out, x.cols(), 1);
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      field_->divergence(t, x.middleCols(begin, columns), out.segment(begin, columns));
    });
  }

  /// ∇·u_t(· | cond) at each sample into @p out, from the field's conditional member.
  template <class Scalar>
  requires HasConditionalDivergence<Field, Scalar>
  void divergence(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                  const std::type_identity_t<ConstMatrixRef<Scalar>>& cond,
                  std::type_identity_t<VectorRef<Scalar>> out) const {
    require_batch_shape("cond", cond, cond.rows(), x.cols());
    require_batch_shape("divergence out", out, x.cols(), 1);
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      field_->divergence(t, x.middleCols(begin, columns), cond.middleCols(begin, columns),
                         out.segment(begin, columns));
    });
  }

  /// (∂u_t/∂x)·tangent into @p out, from the field's jvp member.
  template <class Scalar>
  requires HasJvp<Field, Scalar>
  void jvp(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
           const std::type_identity_t<ConstMatrixRef<Scalar>>& tangent,
           std::type_identity_t<MatrixRef<Scalar>> out) const {
    require_batch_shape("tangent", tangent, x.rows(), x.cols());
    require_batch_shape("out", out, x.rows(), x.cols());
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      field_->jvp(t, x.middleCols(begin, columns), tangent.middleCols(begin, columns),
                  out.middleCols(begin, columns));
    });
  }

  /// (∂u_t/∂x)·tangent at conditions @p cond, from the field's conditional jvp member.
  template <class Scalar>
  void jvp(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
           const std::type_identity_t<ConstMatrixRef<Scalar>>& cond,
           const std::type_identity_t<ConstMatrixRef<Scalar>>& tangent,
           std::type_identity_t<MatrixRef<Scalar>> out) const requires requires(const Field& f) {
    f.jvp(t, x, cond, tangent, out);
  }
  {
    require_batch_shape("cond", cond, cond.rows(), x.cols());
    require_batch_shape("tangent", tangent, x.rows(), x.cols());
    require_batch_shape("out", out, x.rows(), x.cols());
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      field_->jvp(t, x.middleCols(begin, columns), cond.middleCols(begin, columns),
                  tangent.middleCols(begin, columns), out.middleCols(begin, columns));
    });
  }

  /// (∂u_t/∂x)ᵀ·cotangent into @p out, from the field's vjp member.
  template <class Scalar>
  requires HasVjp<Field, Scalar>
  void vjp(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
           const std::type_identity_t<ConstMatrixRef<Scalar>>& cotangent,
           std::type_identity_t<MatrixRef<Scalar>> out) const {
    require_batch_shape("cotangent", cotangent, x.rows(), x.cols());
    require_batch_shape("out", out, x.rows(), x.cols());
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      field_->vjp(t, x.middleCols(begin, columns), cotangent.middleCols(begin, columns),
                  out.middleCols(begin, columns));
    });
  }

  /// (∂u_t/∂x)ᵀ·cotangent at conditions @p cond, from the field's conditional vjp member.
  template <class Scalar>
  void vjp(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
           const std::type_identity_t<ConstMatrixRef<Scalar>>& cond,
           const std::type_identity_t<ConstMatrixRef<Scalar>>& cotangent,
           std::type_identity_t<MatrixRef<Scalar>> out) const requires requires(const Field& f) {
    f.vjp(t, x, cond, cotangent, out);
  }
  {
    require_batch_shape("cond", cond, cond.rows(), x.cols());
    require_batch_shape("cotangent", cotangent, x.rows(), x.cols());
    require_batch_shape("out", out, x.rows(), x.cols());
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      field_->vjp(t, x.middleCols(begin, columns), cond.middleCols(begin, columns),
                  cotangent.middleCols(begin, columns), out.middleCols(begin, columns));
    });
  }

  /// ∇_x(∇·u_t) at each sample into @p out (d×N), from the field's divergence_gradient member.
  template <class Scalar>
  requires HasDivergenceGradient<Field, Scalar>
  void divergence_gradient(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                           std::type_identity_t<MatrixRef<Scalar>> out) const {
    require_batch_shape("divergence_gradient out", out, x.rows(), x.cols());
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      field_->divergence_gradient(t, x.middleCols(begin, columns), out.middleCols(begin, columns));
    });
  }

  /// ∇_x(∇·u_t(· | cond)) at each sample into @p out (d×N), from the field's conditional
  /// divergence_gradient member.
  template <class Scalar>
  void divergence_gradient(Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                           const std::type_identity_t<ConstMatrixRef<Scalar>>& cond,
                           std::type_identity_t<MatrixRef<Scalar>> out) const requires
      requires(const Field& f) {
    f.divergence_gradient(t, x, cond, out);
  }
  {
    require_batch_shape("cond", cond, cond.rows(), x.cols());
    require_batch_shape("divergence_gradient out", out, x.rows(), x.cols());
    for_each_chunk(x.cols(), [&](Index begin, Index columns) {
      field_->divergence_gradient(t, x.middleCols(begin, columns), cond.middleCols(begin, columns),
                                  out.middleCols(begin, columns));
    });
  }

 private:
  template <class Matrixish>
  static void require_batch_shape(const char* name, const Matrixish& matrix, Index rows,
                                  Index cols) {
    if (matrix.rows() != rows || matrix.cols() != cols) {
      throw std::invalid_argument(std::string("ParallelField: ") + name + " is " +
                                  detail::to_text(matrix.rows()) + "x" +
                                  detail::to_text(matrix.cols()) + ", expected " +
                                  detail::to_text(rows) + "x" + detail::to_text(cols));
    }
  }

  // Calls chunk(begin, columns) for the chunks of a batch of @p samples columns on the pool.
  // An empty batch is one empty chunk, so the field still validates its arguments.
  template <class Chunk>
  void for_each_chunk(Index samples, const Chunk& chunk) const {
    const Index chunks = std::max<Index>(1, (samples + chunk_columns_ - 1) / chunk_columns_);
    pool_->parallel_for(chunks, [&](Index i) {
      const Index begin = i * chunk_columns_;
      chunk(begin, std::min(chunk_columns_, samples - begin));
    });
  }

  const Field* field_;
  ThreadPool* pool_;
  Index chunk_columns_;
};

/// A ParallelField over @p field and @p pool with chunks of @p chunk_columns columns.
template <class Field>
ParallelField<Field> parallel_field(const Field& field, ThreadPool& pool,
                                    Index chunk_columns = 256) {
  return ParallelField<Field>(field, pool, chunk_columns);
}

}  // namespace flowmatch
