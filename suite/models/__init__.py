"""Networks: timm models and the suite's small ones by name (``factory``), weights files (``weights``).

Imports: ``suite.config`` and the layers below it; never ``suite.data`` or above.
"""
