"""GPT-2 trainer with attention-bias key/value slots (paper Sec. 4.3; not built yet)."""
