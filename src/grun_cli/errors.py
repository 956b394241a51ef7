"""The one exception type users see: a cause and a fix, printed as a single line by the CLI."""


class GrunError(Exception):
    """A user-facing error (bad option, missing file, empty split, NaN loss...).

    The message must name the cause and the fix; the CLI prints it without a traceback
    and exits with status 2.
    """


def first_line(e: BaseException) -> str:
    """The first line of an exception's message ("" when it has none), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


HALF_PRECISION = ("bfloat16", "float16")
# torch.linalg.householder_product (the orthogonal parametrisation of LoReFT's rotation) has no
# bfloat16/float16 kernel on CPU, nor on CUDA ("orgqr_cuda" not implemented for 'BFloat16', seen
# on an H200 with torch 2.11): a half-precision edit cannot be built on either.
HALF_PRECISION_ERROR = ("adapter.dtype={name}: the LoReFT rotation's Householder product has no half-precision "
                        "kernel (CPU or CUDA); use adapter.dtype=float32 (the default: the edit is computed in "
                        "float32 and cast back to the model's dtype)")
