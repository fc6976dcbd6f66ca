"""CrPO: DPO whose per-pair loss is weighted by creativity signals. (Being written: see the crpo.py issue.)"""
import torch

import kernels


def sequence_logps(model, input_ids, attention_mask, response_mask):
    """Sum of response-token log-probabilities, log pi(y|x) = sum_{t in y} log pi(y_t | x, y_<t).

    input_ids, attention_mask, response_mask: [B, T]; response_mask is 1 on the response tokens
    (the only ones that count). Returns (logps [B] float32, n_tokens [B]).
    Only the positions that predict a response token go through the output layer, so neither
    prompt nor padding tokens cost vocabulary-sized work.
    """
    hidden = model.hidden(input_ids, attention_mask)[:, :-1]  # position t predicts token t+1
    targets = response_mask[:, 1:].bool()
    rows = targets.nonzero(as_tuple=True)
    token_logps = kernels.linear_logprobs(hidden[rows], model.lm_head.weight, input_ids[:, 1:][rows])
    logps = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    logps = logps.index_add(0, rows[0], token_logps)
    return logps, targets.sum(-1)
