"""valueharm: safety research on value-aligned LLMs."""

import os

# MKL's CPU kernels pick code paths by the memory alignment of their operands, so the same seeded training gave
# different weights after a different allocation history (a run that built the tiny base in-process vs one that
# found it cached). Strict conditional numerical reproducibility removes that at no measured cost. MKL reads it
# once, when torch loads: a process that imported torch before valueharm keeps its own setting.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
