"""The target model as an oracle (Python port of sim/src/oracle.rs, bit-exact).

`token_after(req_id, prompt_len, context)` is the greedy token the target emits after
`context` (prompt + outputs + drafts before the position).
"""

MASK = (1 << 64) - 1


def splitmix(x: int) -> int:
    """SplitMix64 finalizer with u64 wrapping arithmetic (oracle.rs `splitmix`)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


class OracleExhausted(Exception):
    pass


class Oracle:
    def __init__(self, spec: dict):
        self.kind = spec["kind"]
        self.tokens = {k: list(v) for k, v in spec.get("tokens", {}).items()}
        self.seed = int(spec.get("seed", 0)) & MASK
        self.vocab_size = int(spec.get("vocab_size", 0))
        self.order = int(spec.get("order", 0))
        if self.kind not in ("continuation", "synthetic"):
            raise ValueError(f"unknown oracle kind {self.kind!r}")

    def synthetic(self, context) -> int:
        n = min(len(context), self.order)
        h = splitmix(self.seed ^ 0x5EED5EED5EED5EED)
        for t in context[len(context) - n:]:
            h = splitmix(h ^ (int(t) & MASK))
        return h % max(self.vocab_size, 1)

    def token_after(self, req_id: str, prompt_len: int, context) -> int:
        if self.kind == "synthetic":
            return self.synthetic(context)
        seq = self.tokens.get(req_id, [])
        i = len(context) - prompt_len
        assert i >= 0, "the oracle is asked after the whole prompt"
        if i >= len(seq):
            raise OracleExhausted(
                f"continuation of {req_id!r} exhausted at position {len(context)} "
                f"({len(seq)} tokens available)"
            )
        return seq[i]
