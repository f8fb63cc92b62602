"""Closed registries from the config names `arch.name` and `arch.loss.name` to classes.

A model class exposes `config_class` (its pydantic config, built from the `arch` keys other than
`loss`) and is constructed as `Model(config, metadata)`; a loss head is constructed as
`Head(model, loss_config, metadata)` (see `models.head.LossHead`).
"""

from models.flow_matching import FlowMatchingTransformer
from models.losses import ACTLossHead, DiscreteFlowMatchingLossHead
from models.trm import TinyRecursiveReasoningModel

MODELS = {
    "trm": TinyRecursiveReasoningModel,
    "flow_matching": FlowMatchingTransformer,
}

LOSS_HEADS = {
    "act": ACTLossHead,
    "discrete_flow_matching": DiscreteFlowMatchingLossHead,
}
