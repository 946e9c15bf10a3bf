"""Reference decision makers for measuring stockshift: the hindsight bound, an online
lookahead LP, naive baselines, the Erlang fill formula and the engine's reference run.
Not used by the production flow."""
