"""Example Aye-Aye models built into fossa-agent.

`PartitionedExampleEtl` is Fossa's own example: 16 subtasks, one per hex digit
`c`, each repeating `c` until the md5 of the string starts with `c * complexity`.
With the default complexity it keeps workers busy for minutes.

`QuickPartitionedEtl` has the same shape but finishes in seconds: use it to
try the gateway out, and see its subtasks spread over the workers.
"""

import hashlib
import time

import ayeaye


class PartitionedExampleEtl(ayeaye.PartitionedModel):
    """Fossa's example workload: a crypto challenge per hex digit."""

    complexity = 4

    def build(self):
        self.log("all crypto challenges are solved")

    def partition_slice(self, workers_count):
        return [("crypto_challenge", {"c": c, "count": self.complexity}) for c in "0123456789abcdef"]

    def crypto_challenge(self, c, count):
        target = c * count
        text = c
        while not hashlib.md5(text.encode()).hexdigest().startswith(target):
            text += c
        return {"c": c, "length": len(text)}

    def partition_subtask_complete(self, task_message):
        value = getattr(task_message, "return_value", None)
        self.log(f"subtask finished: {value}")


class QuickPartitionedEtl(ayeaye.PartitionedModel):
    """Eight subtasks of about a second each: the demo workload."""

    subtasks = 8
    seconds = 1.0

    def build(self):
        self.log("quick partitioned model finished")

    def partition_slice(self, workers_count):
        return [("work", {"n": n, "seconds": self.seconds}) for n in range(self.subtasks)]

    def work(self, n, seconds):
        started = time.time()
        digest = hashlib.sha256(str(n).encode()).hexdigest()
        time.sleep(seconds)
        return {"n": n, "digest": digest[:12], "took": round(time.time() - started, 3)}

    def partition_subtask_complete(self, task_message):
        value = getattr(task_message, "return_value", None)
        self.log(f"subtask finished: {value}")
