"""What the re-run agent observes of a cheap pass, apart from the agent's training (rtsearch.rl.rerun): a deployed
ladder computes it on every input, and loading one needs neither gymnasium nor Ray."""
from __future__ import annotations

import math

import numpy as np
import torch


def features(log_probs):
    """The agent's observation of cheap passes (B, classes) of log-probabilities: sorted class probabilities,
    normalised entropy, the predicted class one-hot. A numpy array in gives one out, a tensor a tensor."""
    as_numpy = isinstance(log_probs, np.ndarray)
    lp = torch.as_tensor(log_probs, dtype=torch.float32)
    probs = lp.exp()
    k = probs.shape[1]
    entropy = -(probs * lp).sum(1, keepdim=True) / math.log(k)
    out = torch.cat([probs.sort(1, descending=True).values, entropy,
                     torch.nn.functional.one_hot(probs.argmax(1), k).float()], 1)
    return out.numpy() if as_numpy else out
