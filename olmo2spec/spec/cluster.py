"""`[cluster]`: the machines a recipe runs on and the figures its estimates use."""

from __future__ import annotations

import attrs

from olmo2spec.spec.fields import doc, non_negative, one_of, positive, unit_interval
from olmo2spec.spec.hardware import GPUS

__all__ = ["ClusterSpec"]


@attrs.frozen(kw_only=True)
class ClusterSpec:
    """Nodes, accelerators, and the efficiency figures of the data centre (section 6.5)."""

    gpu: str = doc("Accelerator kind; 'cpu' runs gloo processes.", default="h100-80gb",
                   validator=one_of(tuple(GPUS)))
    nodes: int = doc("Nodes for training stages (a stage may ask for fewer).", validator=positive)
    gpus_per_node: int = doc("Accelerators (or CPU processes) per node.", default=8, validator=positive)
    mfu: float = doc("Model FLOPs utilisation assumed by the GPU-hour estimate.", default=0.4,
                     validator=unit_interval)
    gpu_power_kw: float = doc(
        "Average power per GPU under load, its share of the host included. 1.13 kW reproduces the "
        "7B figure of Table 19 (131 MWh) at 45% MFU.", default=1.13, validator=positive)
    pue: float = doc("Power usage effectiveness of the data centre (Table 19).", default=1.2, validator=positive)
    carbon_intensity: float = doc("kg CO2 per kWh of the local grid (Table 19).", default=0.332,
                                  validator=non_negative)
    wue: float = doc("Litres of water per kWh, onsite plus offsite (Table 19).", default=1.29,
                     validator=non_negative)
