"""Beyond plain supervised transfer: few-shot prototypes and episodic evaluation."""
