"""The registry of backbones by name: `BACKBONES`, and `get`, `names`.

Each registered name fixes the architecture arguments (depth, version,
last_relu) and forwards the rest (width, patch, representation_size,
num_classes, weight_decay, input_shape, batch_norm, bn_momentum, ...);
`get` refuses an argument the name fixes or the architecture does not take,
listing those it takes.
"""
from selfsup.core.registry import Registry

BACKBONES = Registry("backbone", check_arguments=True)

register = BACKBONES.register
get = BACKBONES.get
names = BACKBONES.names
