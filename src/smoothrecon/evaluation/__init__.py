"""One model under attack into records: the evaluation unit, its inputs, the attack check and
the record schema."""
