import torch

from raysparse.zoo import make_loader


def batches(split, seed, augment=False, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    loader = make_loader(split, batch_size=64, shuffle=True, generator=generator,
                         augment=augment, **kwargs)
    return list(loader) + list(loader)  # two epochs: the second must reshuffle
