#!/usr/bin/env python3
"""Trains the small DeepSeek V4 demo model, exports it in the release format, evaluates it.

Runs on a GPU machine with torch + transformers 5.17 + tokenizers + numpy (one H200: ~7 min).
Input: the output of tools/prepare_data.py (train.jsonl.gz, heldout.jsonl.gz).

    python3 tools/train_small_model.py --data .data/prepared --out OUTDIR [--train-seconds 390]

Steps (all in one run, so that one GPU lease does everything):
 1. a byte-level BPE tokenizer (HF tokenizers) trained on the training text, with DeepSeek's
    pre-tokenizer (three Split regexes + ByteLevel), BOS/EOS ids 0/1 like V4;
 2. a DeepseekV4ForCausalLM built from the hub-form config that is exported (so the exported
    config is by construction the trained one), trained for a wall-clock budget on random
    2048-token windows, each starting with BOS; bf16 autocast, fp32 master weights, AdamW;
    MoE routing balanced without aux loss (DeepSeek's bias update on gate.bias);
 3. the lightning indexer trained as in DeepSeek's sparse-attention recipe: its inputs are
    detached and its scores get a KL loss towards the main attention's distribution over the
    compressed entries (head-averaged, computed densely over every visible entry); the first
    DENSE_FRACTION of the run attends to every compressed entry (dense warm-up), then top-k;
 4. export in the release format (tools/release_format.py codecs, make_fixtures.py names);
 5. evaluation by transformers in float32 on exactly the dequantized exported weights:
    held-out perplexity, the eval fixture (tokens, per-chunk NLL, logits of a short chunk),
    indexer top-k recall vs dense attention ranking, a greedy sample.
OUTDIR/MODEL/ then holds everything that goes to models/MODEL/.
"""

import argparse
import gzip
import json
import math
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
import release_format as rf  # noqa: E402

MODEL_NAME = "v4-tiny-en"
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
VOCAB = 4096
CTX = 2048
DENSE_FRACTION = 0.2

# The architecture: every layer kind at the real ratios (window 128, CSA 4 + top-k, HCA 128),
# two hash-routed MoE layers then biased top-k routing, a shared expert, mHC with 4 streams.
SPEC = dict(form="hub", vocab=VOCAB, dim=256, heads=8, head_dim=64, rope_dim=16, q_lora=128,
            o_groups=2, o_lora=64, index_heads=16, index_head_dim=32, topk=64, inter=256,
            experts=16, active=2, n_hash=2, kinds=["window", "csa", "hca", "csa", "hca", "csa"],
            hca_ratio=128, window=128, T=CTX, shards=1, seed=0)

# DeepSeek V3's pre-tokenizer (numbers in groups of up to 3, CJK runs, then words/punctuation).
SPLITS = [
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|"
    r" ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]


def log(msg):
    print("[%7.1fs] %s" % (time.time() - T0, msg), flush=True)


T0 = time.time()


def read_docs(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------------------- tokenizer

def train_tokenizer(texts, outdir):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in SPLITS]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    assert tok.get_vocab_size() <= VOCAB
    tok.save(os.path.join(outdir, "tokenizer.json"))
    mf.dump_json(os.path.join(outdir, "tokenizer_config.json"), {
        "add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS,
        "clean_up_tokenization_spaces": False, "model_max_length": CTX,
        "tokenizer_class": "PreTrainedTokenizerFast"})
    return tok


def encode_all(tok, texts):
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


# ------------------------------------------------------------------------- export

_INV_GLOBAL = {v: k for k, v in mf._GLOBAL_TF.items()}
_INV_LAYER = {v: k for k, v in mf._LAYER_TF.items()}


def native_format(name):
    if name.endswith("tid2eid"):
        return "i64"
    if ".experts." in name:
        return "fp4"
    base = name.split(".")[-1] if "." in name else name
    if name.startswith("hc_") or ".hc_" in name or base in ("attn_sink", "ape", "bias"):
        return "f32"
    if (name in ("embed.weight", "head.weight") or "norm" in name or ".compressor." in name
            or "weights_proj" in name or name.endswith("gate.weight")):
        return "bf16"
    return "fp8"


def to_native(sd, s):
    """transformers state dict (numpy) -> {native name: (format, array)}."""
    W = {}
    for k, v in sd.items():
        if k in _INV_GLOBAL:
            n = _INV_GLOBAL[k]
        else:
            parts = k.split(".")
            L, rest = int(parts[2]), ".".join(parts[3:])
            if rest == "mlp.experts.gate_up_proj":
                for e in range(s.experts):
                    W["layers.%d.ffn.experts.%d.w1.weight" % (L, e)] = ("fp4", v[e, :s.inter])
                    W["layers.%d.ffn.experts.%d.w3.weight" % (L, e)] = ("fp4", v[e, s.inter:])
                continue
            if rest == "mlp.experts.down_proj":
                for e in range(s.experts):
                    W["layers.%d.ffn.experts.%d.w2.weight" % (L, e)] = ("fp4", v[e])
                continue
            n = "layers.%d.%s" % (L, _INV_LAYER[rest])
        W[n] = (native_format(n), v)
    return W


# ------------------------------------------------------------------------- training helpers

class IndexerKL:
    """Hooks on every CSA compressor: the indexer's inputs are detached, its scores are kept,
    and once the compressor has produced its entries, the main attention's head-averaged
    distribution over the visible compressed entries is the KL target."""

    def __init__(self, torch, mdl, model):
        self.torch, self.mdl = torch, mdl
        self.terms, self.kls, self.handles, self.pending = [], [], [], {}
        self.enabled = True
        for layer in model.model.layers:
            attn = layer.self_attn
            comp = attn.compressor
            if not isinstance(comp, mdl.DeepseekV4CSACompressor):
                continue
            idx = comp.indexer
            self.handles.append(idx.register_forward_pre_hook(self._detach_inputs))
            self.handles.append(idx.scorer.register_forward_hook(self._keep_scores(id(comp))))
            self.handles.append(comp.register_forward_hook(self._loss(attn)))

    @staticmethod
    def _detach_inputs(module, args):
        return tuple(a.detach() if hasattr(a, "detach") and a.is_floating_point() else a for a in args)

    def _keep_scores(self, key):
        def hook(module, args, out):
            self.pending[key] = out
        return hook

    def _loss(self, attn):
        torch, mdl = self.torch, self.mdl

        def hook(comp, args, out):
            scores = self.pending.pop(id(comp))
            if not self.enabled:
                return
            ckv = out[0].detach()  # [B, 1, T, D]
            q_res, pos = args[1].detach(), args[2]
            B, S = q_res.shape[:2]
            T = ckv.shape[2]
            if T == 0:
                return
            ratio = comp.compress_rate
            with torch.no_grad():
                cos, sin = comp.rotary_emb(q_res, position_ids=pos, layer_type="compress")
                q = attn.q_b_proj(q_res).view(B, S, -1, attn.head_dim).transpose(1, 2)
                q = mdl.apply_rotary_pos_emb(attn.q_b_norm(q), cos, sin)
                logits = torch.matmul(q.float(), ckv.float().transpose(-1, -2)) * attn.scaling  # [B,H,S,T]
                visible = torch.arange(T, device=q.device).view(1, -1) < ((pos.view(-1, 1) + 1) // ratio)
                visible = visible.view(1, 1, S, T)
                p = logits.masked_fill(~visible, float("-inf")).softmax(-1)
                p = torch.nan_to_num(p, nan=0.0).mean(1)  # [B,S,T]; rows with nothing visible -> 0
            vis = visible.view(1, S, T)
            lq = scores.float().masked_fill(~vis, float("-inf")).log_softmax(-1)
            lq = lq.masked_fill(~vis, 0.0)
            rows = vis.any(-1).expand(B, S)
            ce = -(p * lq).sum(-1)[rows]
            with torch.no_grad():
                ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)[rows]
                self.kls.append((ce - ent).mean().item())
            self.terms.append(ce.mean())
        return hook

    def take_loss(self):
        loss = sum(self.terms) / max(1, len(self.terms)) if self.terms else None
        self.terms = []
        return loss

    def take_kl(self):
        v = float(np.mean(self.kls)) if self.kls else float("nan")
        self.kls = []
        return v


class RouterBalance:
    """DeepSeek's auxiliary-loss-free balancing: after each step, each top-k router's bias moves
    by a fixed step towards under-loaded experts."""

    def __init__(self, torch, mdl, model, step=1e-3):
        self.torch, self.step, self.loads, self.handles = torch, step, {}, []
        for layer in model.model.layers:
            g = layer.mlp.gate
            if isinstance(g, mdl.DeepseekV4TopKRouter):
                self.handles.append(g.register_forward_hook(self._count(g)))

    def _count(self, gate):
        def hook(module, args, out):
            idx = out[2].reshape(-1)
            c = self.torch.bincount(idx, minlength=module.num_experts).float()
            self.loads[module] = self.loads.get(module, 0) + c
        return hook

    def update(self):
        imbalance = []
        with self.torch.no_grad():
            for g, c in self.loads.items():
                g.e_score_correction_bias += self.step * self.torch.sign(c.mean() - c)
                imbalance.append((c.max() / c.mean()).item())
        self.loads = {}
        return max(imbalance) if imbalance else 0.0


def set_topk(model, mdl, k):
    for m in model.modules():
        if isinstance(m, mdl.DeepseekV4Indexer):
            m.index_topk = k


# ------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=".data/prepared")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-seconds", type=float, default=390.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-chunks", type=int, default=40, help="held-out chunks for the card's PPL")
    ap.add_argument("--fixture-chunks", type=int, default=2, help="held-out chunks in the test fixture")
    a = ap.parse_args()

    import torch
    import tokenizers
    import transformers
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mdl

    mdir = os.path.join(a.out, MODEL_NAME)
    os.makedirs(os.path.join(mdir, "eval"), exist_ok=True)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    random.seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    log("torch %s transformers %s tokenizers %s, %s" % (torch.__version__, transformers.__version__,
                                                        tokenizers.__version__, torch.cuda.get_device_name()))

    train_docs, held_docs = read_docs(os.path.join(a.data, "train.jsonl.gz")), \
        read_docs(os.path.join(a.data, "heldout.jsonl.gz"))
    tok = train_tokenizer([d["text"] for d in train_docs], mdir)
    train_ids = encode_all(tok, [d["text"] for d in train_docs])
    stream = []
    for ids in train_ids:
        stream += [0] + ids + [1]
    stream = torch.tensor(stream, dtype=torch.long)
    chars = sum(len(d["text"]) for d in train_docs)
    log("tokenizer: vocab %d; train %d docs, %d chars, %d tokens (%.2f chars/token)"
        % (tok.get_vocab_size(), len(train_docs), chars, len(stream), chars / len(stream)))

    # ---- model
    s = mf.Spec(MODEL_NAME, SPEC)
    oracle = mf.Oracle()
    cfg, surprises = oracle.config_for(s)
    assert not surprises, surprises
    model = mdl.DeepseekV4ForCausalLM(cfg).to(dev)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.model.layers:
            if layer.mlp.is_hash:
                tbl = torch.stack([torch.randperm(s.experts, generator=g)[:s.active] for _ in range(s.vocab)])
                layer.mlp.gate.tid2eid.copy_(tbl.to(dev))
    n_params = sum(p.numel() for p in model.parameters())
    n_expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    log("model: %d parameters (%d in routed experts), kinds %s" % (n_params, n_expert, s.kinds))
    model.train()

    kl = IndexerKL(torch, mdl, model)
    bal = RouterBalance(torch, mdl, model)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "hc" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "hc" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    idx_params = {id(p) for m in model.modules() if isinstance(m, mdl.DeepseekV4Indexer) for p in m.parameters()}

    def lr_at(frac, step):
        warm = min(1.0, step / 200.0)
        return a.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    n_tok = len(stream)
    step, t_start, dense = 0, time.time(), True
    set_topk(model, mdl, CTX)
    hist = []
    while True:
        frac = (time.time() - t_start) / a.train_seconds
        if frac >= 1.0:
            break
        if dense and frac >= DENSE_FRACTION:
            dense = False
            set_topk(model, mdl, s.topk)
            log("step %d: dense warm-up over, indexer top-%d from now on" % (step, s.topk))
        off = torch.randint(0, n_tok - CTX, (a.batch,))
        x = torch.stack([stream[o:o + CTX] for o in off.tolist()])
        x[:, 0] = 0
        y = torch.stack([stream[o + 1:o + CTX + 1] for o in off.tolist()])
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        for gr in opt.param_groups:
            gr["lr"] = lr_at(frac, step)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x, use_cache=False).logits
        lm = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))
        il = kl.take_loss()
        loss = lm + (il if il is not None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if id(p) not in idx_params], 1.0)
        opt.step()
        imb = bal.update()
        step += 1
        if step % 25 == 0 or step == 1:
            hist.append((step, lm.item()))
            log("step %d lm %.3f indexer-KL %.3f lr %.2e max-load/mean %.2f  %.0f tok/s  mem %.1f GB"
                % (step, lm.item(), kl.take_kl(), lr_at(frac, step), imb,
                   step * a.batch * CTX / (time.time() - t_start), torch.cuda.max_memory_allocated() / 2**30))
    train_s = time.time() - t_start
    log("trained %d steps, %.0f s, %d tokens seen" % (step, train_s, step * a.batch * CTX))
    for h in kl.handles + bal.handles:
        h.remove()

    # ---- export
    sd = {k: v.detach().float().cpu().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
          for k, v in model.state_dict().items()}
    W = to_native(sd, s)
    rel, _twin, deq = mf.quantize_all(W)
    rf.write_safetensors(os.path.join(mdir, "model.safetensors"), rel)
    mf.read_back(mdir, rel)
    hub = mf.hub_config(s, quantized=True)
    mf.dump_json(os.path.join(mdir, "config.json"), hub)
    del model, opt
    torch.cuda.empty_cache()

    # ---- evaluation on exactly the stored values (float32, eager, GPU)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    em = oracle.build(s, cfg, deq).to(dev).eval()

    held_text = "\n\n".join(d["text"] for d in held_docs)
    held_ids = tok.encode(held_text, add_special_tokens=False).ids
    piece = CTX - 1

    def chunk_nll(ids):
        x = torch.tensor([[0] + ids], device=dev)
        with torch.no_grad():
            lg = em(input_ids=x, use_cache=False).logits[0].double()
        nll = torch.nn.functional.cross_entropy(lg[:-1], x[0, 1:], reduction="none")
        return nll, lg

    n_eval = min(a.eval_chunks, len(held_ids) // piece)
    tot, cnt = 0.0, 0
    for c in range(n_eval):
        nll, _ = chunk_nll(held_ids[c * piece:(c + 1) * piece])
        tot += nll.sum().item()
        cnt += nll.numel()
    ppl_card = math.exp(tot / cnt)
    log("held-out PPL (transformers fp32, dequantized weights): %.4f over %d chunks x %d = %d tokens"
        % (ppl_card, n_eval, CTX, cnt))

    # The test fixture: the first held-out document(s), as text, cut so that its tokens make
    # fixture_chunks whole chunks plus a short remainder that both sides drop.
    need = a.fixture_chunks * piece
    text = ""
    for d in held_docs:
        text = (text + "\n\n" + d["text"]) if text else d["text"]
        if len(tok.encode(text, add_special_tokens=False).ids) > need + 50:
            break
    enc = tok.encode(text, add_special_tokens=False)
    cut = text.rfind(" ", 0, enc.offsets[need + 10][0])
    text = text[:cut]
    ids = tok.encode(text, add_special_tokens=False).ids
    assert need <= len(ids) < need + piece, (len(ids), need)
    with open(os.path.join(mdir, "eval", "heldout.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(text)
    with open(os.path.join(mdir, "eval", "heldout_tokens.txt"), "w") as f:
        f.write("".join("%d\n" % i for i in ids))
    chunk_sums, recalls = [], []
    for c in range(a.fixture_chunks):
        nll, _ = chunk_nll(ids[c * piece:(c + 1) * piece])
        chunk_sums.append(nll.sum().item())
    ppl_fx = math.exp(sum(chunk_sums) / (a.fixture_chunks * piece))
    # logits of one short chunk, for a parity check of the exported weights
    short = [0] + ids[:63]
    with torch.no_grad():
        lg = em(input_ids=torch.tensor([short], device=dev), use_cache=False).logits[0].float().cpu().numpy()
    np.save(os.path.join(mdir, "eval", "logits.npy"), lg)
    with open(os.path.join(mdir, "eval", "logits_tokens.txt"), "w") as f:
        f.write("".join("%d\n" % i for i in short))

    # indexer top-k recall against the dense ranking of the main attention (first fixture chunk)
    recall = indexer_recall(torch, mdl, em, [0] + ids[:piece], s, dev)
    log("fixture: %d chunks, PPL %.4f; indexer top-%d recall vs dense attention ranking: %s"
        % (a.fixture_chunks, ppl_fx, s.topk, ", ".join("%.3f" % r for r in recall)))

    # greedy samples
    samples = {}
    prompts = [("plain", "The history of the United States")]
    demo_dir = os.path.join(REPO, "docs", "demo")
    if os.path.isdir(demo_dir) and os.listdir(demo_dir):
        first = sorted(os.listdir(demo_dir))[0]
        with open(os.path.join(demo_dir, first), encoding="utf-8") as f:
            prompts.append(("demo/" + first, f.read().rstrip("\n") + "\n\nSummary:"))
    for name, prompt in prompts:
        p = [0] + tok.encode(prompt, add_special_tokens=False).ids
        out = list(p)
        with torch.no_grad():
            for _ in range(80):
                nxt = int(em(input_ids=torch.tensor([out], device=dev), use_cache=False).logits[0, -1].argmax())
                out.append(nxt)
                if nxt == 1:
                    break
        samples[name] = {"prompt": prompt[-300:], "continuation": tok.decode(out[len(p):]),
                         "continuation_ids": out[len(p):]}
        log("greedy (%s): %r" % (name, samples[name]["continuation"]))

    mf.dump_json(os.path.join(mdir, "eval", "eval.json"), mf.sanitize({
        "what": "computed by transformers %s (DeepseekV4ForCausalLM, float32, eager, no TF32) on exactly "
                "the dequantized exported weights" % transformers.__version__,
        "chunking": "text tokens (no BOS) cut into pieces of ctx-1; each chunk = [BOS] + piece; "
                    "NLL of every piece token given the tokens before it in its chunk; a last "
                    "partial piece is dropped",
        "ctx": CTX, "fixture": {"tokens_file": "heldout_tokens.txt", "text_file": "heldout.txt",
                                "n_tokens": len(ids), "chunks": a.fixture_chunks,
                                "chunk_nll_sums": chunk_sums, "ppl": ppl_fx},
        "heldout": {"chunks": n_eval, "tokens_scored": cnt, "ppl": ppl_card},
        "logits": {"file": "logits.npy", "tokens_file": "logits_tokens.txt", "shape": list(lg.shape)},
        "indexer_recall_topk": {"k": s.topk, "per_csa_layer": recall},
        "samples": samples,
        "training": {"steps": step, "seconds": train_s, "batch": a.batch, "ctx": CTX, "lr": a.lr,
                     "tokens_seen": step * a.batch * CTX, "train_tokens": n_tok,
                     "dense_fraction": DENSE_FRACTION, "loss_history": hist},
        "params": {"total": n_params, "routed_experts": n_expert},
        "versions": oracle.versions() | {"tokenizers": tokenizers.__version__},
    }))
    total = mf.dir_size(mdir) + sum(os.path.getsize(os.path.join(mdir, "eval", f))
                                    for f in os.listdir(os.path.join(mdir, "eval")))
    log("exported %s: %.2f MB" % (mdir, total / 1e6))
    return 0


def indexer_recall(torch, mdl, model, ids, s, dev):
    """Per CSA layer: mean over queries with more than k visible entries of
    |indexer top-k ∩ top-k of the head-averaged dense main-attention scores| / k."""
    got = {}

    def hook_for(attn):
        def hook(comp, args, out):
            ckv = out[0]
            q_res, pos = args[1], args[2]
            B, S = q_res.shape[:2]
            T = ckv.shape[2]
            cos, sin = comp.rotary_emb(q_res, position_ids=pos, layer_type="compress")
            q = attn.q_b_proj(q_res).view(B, S, -1, attn.head_dim).transpose(1, 2)
            q = mdl.apply_rotary_pos_emb(attn.q_b_norm(q), cos, sin)
            lg = torch.matmul(q.float(), ckv.float().transpose(-1, -2)) * attn.scaling
            vis = torch.arange(T, device=dev).view(1, -1) < ((pos.view(-1, 1) + 1) // comp.compress_rate)
            p = lg.masked_fill(~vis.view(1, 1, S, T), float("-inf")).softmax(-1).mean(1)[0]  # [S,T]
            picks = out[1][0, 0] == 0  # block_bias 0 where the indexer picked
            n_vis = vis.sum(-1)
            rows = (n_vis > s.topk).nonzero().view(-1)
            dense_top = p[rows].topk(s.topk, dim=-1).indices
            hit = picks[rows].gather(1, dense_top).float().sum(-1) / s.topk
            got[attn.layer_idx] = hit.mean().item()
        return hook

    hs = [layer.self_attn.compressor.register_forward_hook(hook_for(layer.self_attn))
          for layer in model.model.layers if isinstance(layer.self_attn.compressor, mdl.DeepseekV4CSACompressor)]
    with torch.no_grad():
        model(input_ids=torch.tensor([ids], device=dev), use_cache=False)
    for h in hs:
        h.remove()
    return [got[k] for k in sorted(got)]


if __name__ == "__main__":
    sys.exit(main())
