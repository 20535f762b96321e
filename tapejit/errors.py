"""The tapejit exception family: every error the library raises on bad input derives
from ``TapejitError`` and names the problem."""


class TapejitError(Exception):
    """Base class of every tapejit error."""


class ShapeError(TapejitError, ValueError):
    """Shapes that do not broadcast, or a wrong shape for an input."""


class DTypeError(TapejitError, TypeError):
    """A dtype tapejit cannot differentiate (complex, object, strings...)."""


class GradientLostError(TapejitError, TypeError):
    """numpy was about to copy a tensor that requires grad into an ndarray (a TypeError, so
    that numpy passes it on instead of trying the value as a sequence)."""


class TapeConsumedError(TapejitError, RuntimeError):
    """A tensor whose tape was already consumed by ``backward()``."""


class BackwardError(TapejitError, RuntimeError):
    """``backward()`` called in a way that has no meaning (non-scalar without gradient...)."""


class TraceError(TapejitError, RuntimeError):
    """An operation that cannot be recorded inside ``tj.trace`` (``float(t)``, ``t.item()``...)."""


class BranchChangedError(TapejitError, RuntimeError):
    """A Python branch taken while tracing goes the other way at the replay point."""


class InvalidTapeError(TapejitError, ValueError):
    """A tape whose indices, opcodes or sizes are inconsistent; it is never replayed."""


class TapeFormatError(InvalidTapeError):
    """A saved tape file that is malformed, truncated or of an unknown version."""


class CudaUnavailableError(TapejitError, RuntimeError):
    """The CUDA target was asked for but no GPU or no numba-cuda is available."""


class NonFiniteError(TapejitError, FloatingPointError):
    """Raised under ``tj.debug_nans()`` at the first instruction producing NaN or Inf."""


class NotCompilableError(TapejitError, ValueError):
    """``Function.compile()`` on a tape too large to unroll into straight-line code."""


class PrimitiveError(TapejitError, RuntimeError):
    """A user primitive that cannot be registered, or whose kernel raised while recording."""
