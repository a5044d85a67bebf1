"""Jobs: submit and the queue, reconcile, starts and input staging."""
