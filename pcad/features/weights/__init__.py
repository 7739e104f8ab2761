"""Package data: the Point-MAE checkpoint shipped with pcad (see
:mod:`pcad.features.pointmae_pretrain` for how ``pointmae_pcad_small.pth`` was made)."""
