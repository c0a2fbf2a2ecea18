"""Model registry: the CIFAR-style networks of the QCFS/PASCAL papers, a small CNN, any
torchvision classifier by name ("tv:<name>"), and a small BERT for text tasks ("bert_tiny",
which takes token ids; needs the transformers extra).

Every model uses plain tensor ops and average pooling (``vgg_small`` and ``resnet20`` can use
max pooling, which converts as it is: docs/methods.md §8), so it is torch.fx traceable and
prepare()/convert() accept it; the CNNs use ReLU, ``vit_tiny`` GELU (or ReLU/SiLU) and
attention, ``efficientnet_tiny`` SiLU and squeeze-excitation gates (analog ops in the SNN,
docs/methods.md §8). ``tv:`` models are torchvision's architectures as published, built
untrained (weights=None, nothing is downloaded); those with SiLU, GELU or Hardswish are
converted by the sum-coded methods after prepare(), and the methods for ReLU ANNs refuse them.
"""
import inspect

from torch import nn

from ..errors import SpikeBridgeError
from .bert import bert_tiny
from .efficientnet import efficientnet_tiny
from .mobilenet import MobileNetV2
from .rescat import ResCatNet
from .resnet import resnet18, resnet20, resnet34
from .small import MLP, SmallCNN
from .vgg import VGG16, VGGSmall
from .vit import vit_tiny

TV_PREFIX = "tv:"

# name -> (constructor, native input size or None when any size works)
_REGISTRY = {
    "vgg16": (VGG16, 32),
    "resnet18": (resnet18, 32),
    "resnet20": (resnet20, 32),
    "resnet34": (resnet34, 32),
    "mobilenetv2": (MobileNetV2, 32),
    "small_cnn": (SmallCNN, None),
    "mlp": (MLP, None),
    "vgg_small": (VGGSmall, None),
    "rescat": (ResCatNet, None),
    "vit_tiny": (vit_tiny, None),
    "efficientnet_tiny": (efficientnet_tiny, None),
}
# name -> constructor of a model that takes token ids [B, S]: num_classes, vocab_size, max_len
_TEXT_REGISTRY = {
    "bert_tiny": bert_tiny,
}


def available():
    """Registered model names. Any torchvision classifier also works as "tv:<name>"."""
    return sorted([*_REGISTRY, *_TEXT_REGISTRY])


def takes_text(name):
    """Whether model ``name`` takes token ids (a text model) rather than images."""
    return name in _TEXT_REGISTRY


def input_size(name):
    """Spatial input size the model is built for (28x28 data is padded to it), or None if any
    size works."""
    if name.startswith(TV_PREFIX) or takes_text(name):
        return None
    return _entry(name)[1]


def create(name, num_classes=10, in_channels=None, **kwargs):
    """Build model ``name`` untrained; ``model.spikebridge_spec`` holds the arguments that
    rebuild it (``create(**spec)``). Image models take ``in_channels`` (default 3); text models
    take ``vocab_size`` and ``max_len`` instead."""
    if takes_text(name):
        if in_channels is not None:
            raise SpikeBridgeError(f"model {name!r} takes token ids, not images with in_channels")
        ctor = _TEXT_REGISTRY[name]
        _check_kwargs(name, ctor, kwargs)
        model = ctor(num_classes=num_classes, **kwargs)
        model.spikebridge_spec = {"name": name, "num_classes": num_classes, **kwargs}
        return model
    in_channels = 3 if in_channels is None else in_channels
    if name.startswith(TV_PREFIX):
        model = _torchvision(name[len(TV_PREFIX):], num_classes, in_channels, kwargs)
    else:
        ctor = _entry(name)[0]
        _check_kwargs(name, ctor, kwargs)
        model = ctor(num_classes=num_classes, in_channels=in_channels, **kwargs)
    model.spikebridge_spec = {"name": name, "num_classes": num_classes, "in_channels": in_channels, **kwargs}
    return model


def _entry(name):
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpikeBridgeError(
            f"unknown model {name!r}; choose one of {', '.join(available())} or tv:<torchvision classifier>"
        ) from None


def _check_kwargs(name, ctor, kwargs):
    allowed = set(inspect.signature(ctor).parameters) - {"num_classes", "in_channels"}
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise SpikeBridgeError(
            f"model {name!r} has no option {', '.join(bad)}; its options are {', '.join(sorted(allowed)) or 'none'}"
        )


def _torchvision(tv_name, num_classes, in_channels, kwargs):
    """torchvision classifier, untrained. For in_channels != 3 the first Conv2d that reads
    the 3-channel image is replaced by an identical conv with in_channels inputs."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if tv_name not in names:
        raise SpikeBridgeError(
            f"torchvision has no classification model {tv_name!r}; see torchvision.models.list_models()"
        )
    if "weights" in kwargs:
        raise SpikeBridgeError("tv: models are built untrained; load pretrained weights yourself")
    try:
        model = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise SpikeBridgeError(f"cannot build tv:{tv_name} with options {kwargs}: {e}") from None
    if in_channels != 3:
        _replace_first_conv(model, tv_name, in_channels)
    return model


def _replace_first_conv(model, tv_name, in_channels):
    for qualname, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3 and conv.groups == 1:
            new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, 1, conv.bias is not None, conv.padding_mode)
            parent_name, _, attr = qualname.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, new)
            return
    raise SpikeBridgeError(f"tv:{tv_name} has no 3-channel input conv to adapt to in_channels={in_channels}")
