"""Names shared across layers (no imports: safe from any import cycle)."""

# The features key that carries a per-example random seed from the input
# pipeline (selfsup.data) to the preprocessing ops (selfsup.preprocess).
SEED_KEY = "_seed"
