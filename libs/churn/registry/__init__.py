"""Model registry on files: versions, cards, the production alias, gated atomic promotion, history."""
