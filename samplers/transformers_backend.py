"""transformers backend: batched `generate` on CPU (the default) or one GPU.

Reproducibility per prompt, not per batch: plain `generate(do_sample=True)` draws from one global RNG, so a
prompt's samples change when the batch around it changes (a resumed run, another batch size). Here each of the
k rows of a prompt gets its own torch.Generator seeded from (seed, prompt, sample index), and sampling is done
by a logits processor with the Gumbel-max trick: argmax(log p_T,top-p + Gumbel noise) is an exact sample from the
tempered, top-p-truncated distribution, and greedy decoding then takes it. The same processor records the
log-probability of each sampled token under the untempered policy (the `logprob_sum` column), which costs
nothing extra and feeds the confidence scorer.

Rows are the prompts repeated k times (what `num_return_sequences=k` does inside generate; greedy decoding
refuses that argument, so the expansion is explicit). Prompts are generated in chunks of `batch_prompts`; each
finished chunk is reported to the live progress (pipelines/core/progress.py:report_generated).

Step-level search (pipelines/step_pairs/mcts.py) adds three per-call options: `continue_final` (continue a
partial assistant message: `apply_chat_template(continue_final_message=True)`), `stop` (stop strings:
generate's `stop_strings`, then the text is cut before the first match) and `max_new_tokens`. A row that ends on
a stop string keeps generating pad tokens while the rest of the batch finishes, so its log-prob sum is taken from
the per-token log-probs up to (and including) the token that completed the stop string, not from the running sum.
"""

from __future__ import annotations

import math

from pipelines.core.devices import device_and_dtype
from pipelines.core.models import resolve_model
from pipelines.core.progress import report_generated
from samplers import Generation, render_chat


class SeededGumbelSampling:
    """LogitsProcessor: per-row seeded sampling with temperature and top-p; records policy log-probs."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, eos_ids: list[int], device):
        import torch
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p
        self.eos = torch.tensor(eos_ids, device=device)
        self.logprob_sum = torch.zeros(len(seeds), dtype=torch.float64, device=device)
        self.done = torch.zeros(len(seeds), dtype=torch.bool, device=device)
        self.token_logps: list = []  # one [rows] tensor per generated position: sums over any truncation

    def __call__(self, input_ids, scores):
        import torch
        scores = scores.float()
        logp = torch.log_softmax(scores, dim=-1)
        if self.temperature == 0:  # greedy (evaluation): no noise, no truncation
            return self._emit(logp, scores, logp.argmax(dim=-1))
        warped = torch.log_softmax(scores / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_logp, order = warped.sort(dim=-1, descending=True)
            cum = sorted_logp.exp().cumsum(dim=-1)
            remove_sorted = (cum - sorted_logp.exp()) >= self.top_p  # keep the smallest set reaching top_p
            remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
            warped = warped.masked_fill(remove, -math.inf)
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device)
                               for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        return self._emit(logp, scores, (warped + gumbel).argmax(dim=-1))

    def _emit(self, logp, scores, token):
        """Record the chosen tokens' policy log-probs and force generate to take them."""
        import torch
        rows = torch.arange(scores.shape[0], device=scores.device)
        self.token_logps.append(logp[rows, token].double())
        self.logprob_sum += torch.where(self.done, 0.0, logp[rows, token].double())
        self.done |= torch.isin(token, self.eos)
        out = torch.full_like(scores, -math.inf)
        out[rows, token] = 0.0
        return out


class TransformersSampler:
    name = "transformers"

    def __init__(self, cfg):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.model_name = cfg.model
        path = resolve_model(cfg.model)
        self.device, dtype = device_and_dtype("auto", cfg.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **cfg.engine_kwargs).to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = sorted({*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id} - {None})
        torch.set_grad_enabled(False)

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def render(self, messages: list[dict], continue_final: bool = False) -> str:
        return render_chat(self.tokenizer, messages, continue_final)

    def prompt_tokens(self, messages: list[dict]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def generate(self, conversations: list[list[dict]], n: int, seeds: list[int], *, continue_final: bool = False,
                 stop: list[str] | None = None, max_new_tokens: int | None = None) -> list[list[Generation]]:
        texts = [self.render(m, continue_final) for m in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a chunk: less padding
        results: list[list[Generation] | None] = [None] * len(texts)
        step = self.cfg.batch_prompts
        for start in range(0, len(order), step):
            chunk = order[start:start + step]
            outs = self._generate_chunk([texts[i] for i in chunk], n, [seeds[i] for i in chunk],
                                        stop=stop or None, max_new_tokens=max_new_tokens)
            for i, gens in zip(chunk, outs):
                results[i] = gens
            report_generated(len(chunk), sum(g.completion_tokens for gens in outs for g in gens))
        return results  # type: ignore[return-value]

    def _generate_chunk(self, texts: list[str], n: int, seeds: list[int], stop: list[str] | None = None,
                        max_new_tokens: int | None = None) -> list[list[Generation]]:
        import torch
        from transformers import LogitsProcessorList

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        input_ids = enc["input_ids"].repeat_interleave(n, dim=0)
        attention = enc["attention_mask"].repeat_interleave(n, dim=0)
        # One generator per row, seeded from (prompt seed, sample index): independent of batch composition.
        row_seeds = [(s * 1_000_003 + j) % (2**63) for s in seeds for j in range(n)]
        sampler = SeededGumbelSampling(row_seeds, self.cfg.temperature, self.cfg.top_p, self.eos_ids, self.device)
        stop_kwargs = dict(stop_strings=list(stop), tokenizer=self.tokenizer) if stop else {}
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
            do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
            logits_processor=LogitsProcessorList([sampler]), pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_ids, **stop_kwargs)
        generated = out[:, input_ids.shape[1]:]
        eos = torch.tensor(self.eos_ids, device=generated.device)
        results: list[list[Generation]] = []
        for p in range(len(texts)):
            gens = []
            for j in range(n):
                row = p * n + j
                tokens = generated[row].tolist()
                is_eos = torch.isin(generated[row], eos).tolist()
                stop_at = is_eos.index(True) if True in is_eos else None
                body = tokens[:stop_at] if stop_at is not None else tokens
                text = self.tokenizer.decode(body, skip_special_tokens=True)
                cut = _first_stop(text, stop) if stop else None
                if cut is not None:
                    gens.append(self._stopped(text, body, cut, sampler, row, int(prompt_lens[p])))
                    continue
                gens.append(Generation(
                    text=text,
                    finish_reason="stop" if stop_at is not None else "length",
                    prompt_tokens=int(prompt_lens[p]),
                    completion_tokens=len(body) + (1 if stop_at is not None else 0),
                    logprob_sum=float(sampler.logprob_sum[row])))
            results.append(gens)
        return results

    def _stopped(self, text: str, body: list[int], cut: tuple[int, str], sampler, row: int,
                 prompt_tokens: int) -> Generation:
        """A row that ended on a stop string: text before it; tokens (and log-probs) up to the one completing it."""
        index, matched = cut
        n_tokens = len(body)
        # the stop string is complete in body[:n_tokens]; walk back while it is still complete one token earlier
        while n_tokens > 1 and _first_stop(self.tokenizer.decode(body[:n_tokens - 1], skip_special_tokens=True),
                                           [matched]) is not None:
            n_tokens -= 1
        logps = sampler.token_logps[:n_tokens]
        return Generation(text=text[:index], finish_reason="stop", prompt_tokens=prompt_tokens,
                          completion_tokens=n_tokens, logprob_sum=float(sum(float(t[row]) for t in logps)),
                          stop_reason=matched)


def _first_stop(text: str, stop: list[str]) -> tuple[int, str] | None:
    """(index, stop string) of the earliest stop string in text, or None."""
    hits = [(text.find(s), s) for s in stop if s and text.find(s) >= 0]
    return min(hits) if hits else None
