"""The seeded-weight rule shared by the LPIPS / FID golden generator (tests/testdata/generate_lpips_fid_golden.py,
run with torch outside the suite) and its check (tests/test_lpips_fid.py): numpy only, so both import it."""
import numpy as np

SEED = {"alex": 1, "vgg": 2, "inception": 3}


def seeded_value(rng: np.random.Generator, key: str, shape) -> np.ndarray:
  """The value of one state_dict entry. Conv / linear weights: He-normal (activations stay O(1) through 90 layers);
  BatchNorm: weight 1 + 0.1 N, bias / running_mean 0.1 N, running_var U(0.5, 1.5); other 1-D entries (conv
  biases) 0.1 N."""
  shape = tuple(int(s) for s in shape)
  if key.endswith("running_var"):
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  if len(shape) >= 2:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
  if key.endswith(".bn.weight"):
    return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
  return (0.1 * rng.standard_normal(shape)).astype(np.float32)
