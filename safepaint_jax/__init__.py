"""SafePaint: anti-forensic inpainting with region-wise separated attention (hnucdy/SafePaint, ACM MM 2024).

Modules: model.py (generator, RWSA, extractor, discriminator), losses.py (hole L1, domain triplet), task.py
(engine task), convert.py (official G / D keys, torchvision VGG), data.py (folders, masks), predict.py,
evaluate.py (trained vs untrained quality per hole-ratio bin), arena.py (the suite's detectors as judges).

Choices, faithful unless stated:
* numerics as the official code: InstanceNorm without affine, reflect padding, the non-standard RWSA Gaussian
  (effective sigma sqrt(2)), round-half-even mask pooling, partial convs with the 1e-8 ratio, spectral norm with
  one power iteration per train-mode call (golden parity < 1e-6 for RWSA, the residual block, the extractor head);
* the background code is broadcast to the input size (the official code hard-codes 256, same result there), so
  any size that is a multiple of 4 and >= 64 runs (the demo trains at 64);
* the discriminator returns logits and the nsgan loss applies the sigmoid (equal to BCELoss(sigmoid) but for its
  -100 log clamp);
* the domain term is the official degenerate triplet (mean|a - p| + 0.1 per element) by default, an L2 distance as
  an option (`loss.domain_mode`);
* updates: standard alternating G then D (on the same detached O2) by default; the official single backward pass
  (`update_mode='combined'`) reproduces D descending the generator's adversarial term too;
* perceptual / style losses use a frozen ImageNet VGG (VGG19 as the official code; VGG16 selectable) converted
  from a user-supplied torchvision state_dict; nothing is downloaded; the demo runs without them.
"""
