"""The networks and the augmentation pipe: z -> mapping -> synthesis -> image; image -> augment -> D.

Persisted into network pickles: these modules import only numpy, torch, torch_utils and dnnlib."""
