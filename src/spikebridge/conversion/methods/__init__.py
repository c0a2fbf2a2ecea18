"""The registered conversion methods, one file each; importing this package registers them
in the order below, which is the order ``sb.methods()`` lists them."""
from . import qcfs  # noqa: F401  (isort: skip)
from . import pasc  # noqa: F401  (isort: skip)
from . import bitplane  # noqa: F401  (isort: skip)
from . import relu_thresholds  # noqa: F401  (isort: skip)
from . import local_balancing  # noqa: F401  (isort: skip)
from . import network_level  # noqa: F401  (isort: skip)
