"""Sequential unlearning: a stream of forget requests, each unlearned on top of the last
(``grun unlearn sequence=...``). ``requests`` turns the settings into author groups; ``run``
trains them one after the other (GRUN: one gated edit per request, stacked on the frozen model;
LoRA / full: training goes on from the previous request's weights) and evaluates after each."""
