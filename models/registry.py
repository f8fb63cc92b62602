"""Closed registries from the config names `arch.name` and `arch.loss.name` to classes.

A model class exposes `config_class` (its pydantic config, built from the `arch` keys other than
`loss`) and is constructed as `Model(config, metadata)`; a loss head is constructed as
`Head(model, loss_config, metadata)` (see `models.head.LossHead`).
"""

from models.flow_matching import FlowMatchingTransformer
from models.head import LossHead
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


def build_head(arch_name: str, model_config, loss_name: str, loss_config, metadata) -> LossHead:
    """Build the model named `arch_name` and wrap it in the loss head named `loss_name`."""
    model = MODELS[arch_name](model_config, metadata)
    return LOSS_HEADS[loss_name](model, loss_config, metadata)
