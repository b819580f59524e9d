"""A Fargate emulator in front of moto_server.

moto keeps ECS clusters, services and task definitions but starts no task.
This proxy forwards every AWS call to moto, except the ECS calls about tasks
(ListTasks, DescribeTasks, StopTask), which it answers from its own tasks, and
DescribeServices, whose running and pending counts it fills in. Its tasks are
real containers:

* a reconciler keeps each ACTIVE service at its desiredCount of tasks of the
  service's current task-definition revision, rolling a new revision within the
  service's deploymentConfiguration (minimumHealthyPercent, maximumPercent;
  ECS's defaults 100 and 200);
* a task is a pause container (as ECS's awsvpc mode has) whose network
  namespace gets a veth on the gateway namespace's bridge and an address in the
  subnet of the service's networkConfiguration, with the default route through
  the gateway's private address; its one container (the task definition's
  first) then joins that namespace, with `environment` and `secrets` (resolved
  from SSM with decryption, as the ECS agent does with the execution role);
* the image is pulled from the registry with the ECR token (the emulator's
  GetAuthorizationToken), so a registry that is down stops the task with
  CannotPullContainerError;
* tasks move PROVISIONING -> PENDING -> RUNNING -> STOPPED (a running task
  stopped is DEACTIVATING, then STOPPING while its container has SIGTERM and
  the task definition's stopTimeout to exit, as `docker stop`), with stopCode and
  stoppedReason as ECS reports them: EssentialContainerExited ("Essential
  container in task exited"), ServiceSchedulerInitiated ("Scaling activity
  initiated by (deployment ecs-svc/…)"), UserInitiated (StopTask's reason),
  TaskFailedToStart ("ResourceInitializationError: …", "CannotPullContainerError: …").
  A service whose tasks keep exiting at start is retried with a growing delay.

Where moto falls short of ECS, the emulator keeps the state itself:

* a service's capacityProviderStrategy (moto drops it): recorded from
  CreateService and UpdateService, reported by DescribeServices, and used to
  place each new task on FARGATE or FARGATE_SPOT, bases first, then where the
  provider's share stays lowest; UpdateService with forceNewDeployment
  replaces every task, as a new deployment does;
* task scale-in protection (UpdateTaskProtection, GetTaskProtection): the
  scheduler never stops a protected task, whether scaling in or replacing an
  old revision; it stops it once the protection is lifted or expires;
* the account's Fargate vCPU quotas (Service Quotas' GetServiceQuota for
  L-3032A538 and L-36FBB829, which moto lacks), `--fargate-vcpu-quota` each,
  changed at run time by `POST /_emulator/quota` with `{"vcpu": n}`. A task
  that would take a provider's running tasks over its quota is not placed:
  the service gets ECS's event "(service …) was unable to place a task.
  Reason: You've reached the limit on the number of vCPUs you can run
  concurrently. …", and "(service …) has reached a steady state." once it
  runs what it wants; DescribeServices reports the events, newest first;
* deployments: each new task definition or forced deployment is a new
  PRIMARY deployment, IN_PROGRESS until the service runs its count of it,
  then COMPLETED; DescribeServices reports it with its rolloutState;
* Spot interruptions: `POST /_emulator/interrupt` with `{"task": id}` stops a
  FARGATE_SPOT task with stopCode SpotInterruption, as Fargate does when it
  takes the capacity back.

AWS's rules it enforces where moto accepts what AWS refuses are in RULES,
each citing the AWS page it comes from: the Fargate CPU and memory pairs,
ECS's service-linked role, without which CreateCluster and CreateService
fail, the deployment circuit breaker (a deployment whose tasks keep failing
to start is FAILED at ECS's threshold and launches no more; with rollback
the service returns to the last completed deployment), and DeleteCluster
refused while tasks stop (a stopped task holds the
cluster for STOP_LINGER_SECS more); in EC2_RULES, IAM's propagation delay
(RunInstances refusing an instance profile made a moment ago); and EC2's
eventual consistency (the calls that follow a create get Invalid*.NotFound
about what it made for CONSISTENCY_SECS). Where tasks start: the image's
architecture against the task definition's runtimePlatform (X86_64 when it
has none: another one exits at once), no ARM64 task on FARGATE_SPOT, and
each subnet's addresses (5 reserved; a task without one stops with EC2's
InsufficientFreeAddressesInSubnet). ECS's request throttling, each
category's token bucket as AWS sizes it. With --enforce-iam, the calls it
answers itself are checked against the signer's IAM policies, as moto
checks the rest. Each is a default: no test has to switch it on.

The emulator logs each transition to stdout. Loopback and namespaces the test
made only.
"""

import argparse
import http.client
import http.server
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import threading
import re
import time
import urllib.parse
import uuid

import boto3

parser = argparse.ArgumentParser()
parser.add_argument("--listen", type=int, required=True)
parser.add_argument("--upstream", type=int, required=True)
parser.add_argument("--docker-host", required=True)
parser.add_argument("--gateway-netns", required=True, help="name of the gateway's network namespace")
parser.add_argument("--bridge", default="fbr0", help="bridge in the gateway namespace the tasks attach to")
parser.add_argument("--gateway-ip", required=True, help="the gateway's private address: the tasks' default route")
parser.add_argument("--prefix-len", type=int, default=16, help="prefix length of the tasks' on-link network (the VPC's)")
parser.add_argument("--region", required=True, help="the region whose services it runs")
parser.add_argument("--tick", type=float, default=0.5)
parser.add_argument(
    "--enforce-iam",
    action="store_true",
    help="check the caller's IAM policies on the calls it answers itself, as moto (started enforcing) does on the rest",
)
parser.add_argument("--fargate-vcpu-quota", type=float, default=64.0, help="the account's Fargate On-Demand and Spot vCPU quotas it reports")
args = parser.parse_args()

REGION = args.region
ACCOUNT = "123456789012"  # moto's account
UPSTREAM = f"http://127.0.0.1:{args.upstream}"
lock = threading.RLock()
tasks = {}  # task ARN -> dict
failures = {}  # service ARN -> (consecutive failed starts, not before)
next_host = {}  # subnet id -> next host number
strategies = {}  # service ARN -> capacityProviderStrategy as last set
generations = {}  # service ARN -> deployment number (forceNewDeployment bumps it)
protection = {}  # task ARN -> protection expiry (epoch seconds)
events = {}  # service ARN -> [service event], newest first
deployments = {}  # service ARN -> its PRIMARY deployment (rolloutState, failedTasks)
breakers = {}  # service ARN -> deploymentCircuitBreaker as CreateService/UpdateService set it
quota = {"vcpu": args.fargate_vcpu_quota}  # each provider's vCPU quota, as now set

UNPLACED_VCPU = (
    "was unable to place a task. Reason: You've reached the limit on the number of vCPUs you can run "
    "concurrently. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."
)


UNPLACED_ARM64_SPOT = "was unable to place a task. Reason: FARGATE_SPOT does not run tasks with the ARM64 CPU architecture."


def service_event(svc, what):
    """Adds ECS's event `(service NAME) what` to the service, unless the newest
    one says the same and is under a minute old (ECS does not repeat itself
    on every attempt either)."""
    message = f"(service {svc['serviceName']}) {what}"
    with lock:
        mine = events.setdefault(svc["serviceArn"], [])
        if mine and mine[0]["message"] == message and epoch() - mine[0]["createdAt"] < 60:
            return
        mine.insert(0, {"id": uuid.uuid4().hex, "createdAt": epoch(), "message": message})
        del mine[100:]
    log(f"service event: {message}")
DOCKER_CONFIG = tempfile.mkdtemp(prefix="fossa-emu-docker-")


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def client(service):
    # Its own calls sign with the keys in its environment: an administrator's
    # when moto enforces IAM.
    return boto3.client(service, region_name=REGION, endpoint_url=UPSTREAM)


ecs = client("ecs")
ssm = client("ssm")
ec2 = client("ec2")
ecr = client("ecr")
iam = client("iam")
logs = client("logs")


def docker(*argv, check=True, env=None):
    r = subprocess.run(
        ["docker", "-H", args.docker_host, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_CONFIG": DOCKER_CONFIG, **(env or {})},
    )
    if check and r.returncode != 0:
        raise RuntimeError((r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout).strip() else f"docker {argv[0]} failed")
    return r


def sh(*argv):
    r = subprocess.run(list(argv), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r.stdout


def epoch():
    return time.time()


# ---- task lifecycle --------------------------------------------------------


def container_names(task):
    return f"fossa-emu-{task['id']}-pause", f"fossa-emu-{task['id']}"


def veth_name(task):
    return "fe" + task["id"][:10]


def set_state(task, status, **extra):
    with lock:
        task["lastStatus"] = status
        task.update(extra)
        task["version"] += 1
    reason = task.get("stoppedReason", "") if status in ("DEACTIVATING", "STOPPED") else ""
    log(f"task {task['id']} {status} {reason}".rstrip())


# Stopping a running task (StopTask, scale-in, a deployment, a Spot
# interruption) is "the equivalent of docker stop": SIGTERM, then SIGKILL
# after the container's stopTimeout, 30 s on Fargate when unset and at most
# 120 (StopTask and ContainerDefinition's stopTimeout, API reference:
# https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_StopTask.html,
# https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html;
# a Spot interruption's two-minute warning is that SIGTERM: "AWS Fargate
# capacity providers",
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-capacity-providers.html).
# Meanwhile the task is desiredStatus STOPPED, with its stopCode and
# stoppedReason, lastStatus DEACTIVATING then STOPPING, and out of
# ListTasks' RUNNING listing; it is STOPPED once its container exited
# (task lifecycle:
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html).
DEFAULT_STOP_TIMEOUT = 30
MAX_STOP_TIMEOUT = 120


def stop(task, code, reason, exit_code=None):
    # The first stop wins: the watcher, seeing a stopping task's container
    # gone before the task reads STOPPED, must not stop it again with
    # "Essential container in task exited" (ECS keeps the first stop code
    # and reason).
    with lock:
        if task.get("stopClaimed") or (task["desiredStatus"] == "STOPPED" and task["lastStatus"] == "STOPPED"):
            return
        task["stopClaimed"] = True
        task["desiredStatus"] = "STOPPED"
        task["stoppingAt"] = epoch()
        task["stopCode"] = code
        task["stoppedReason"] = reason
        graceful = task["lastStatus"] == "RUNNING" and exit_code is None
    if graceful:
        set_state(task, "DEACTIVATING")
        threading.Thread(target=stop_running, args=(task,), daemon=True).start()
    else:
        finish_stop(task, exit_code)


def stop_running(task):
    """SIGTERM, the stop window, SIGKILL: docker stop."""
    _, worker = container_names(task)
    set_state(task, "STOPPING")
    window = min(int(task.get("stopTimeout") or DEFAULT_STOP_TIMEOUT), MAX_STOP_TIMEOUT)
    docker("stop", "-t", str(window), worker, check=False)
    r = docker("inspect", "-f", "{{.State.ExitCode}}", worker, check=False)
    finish_stop(task, int(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip().lstrip("-").isdigit() else None)


def finish_stop(task, exit_code):
    pause, worker = container_names(task)
    docker("rm", "-f", worker, pause, check=False)
    # The ENI goes with the task.
    subprocess.run(["ip", "-n", args.gateway_netns, "link", "del", veth_name(task)], capture_output=True)
    extra = {"stoppedAt": epoch(), "executionStoppedAt": epoch()}
    if exit_code is not None:
        task["containers"][0]["exitCode"] = exit_code
    task["containers"][0]["lastStatus"] = "STOPPED"
    set_state(task, "STOPPED", **extra)


def failed_start(task, reason):
    with lock:
        n, _ = failures.get(task["service"], (0, 0))
        failures[task["service"]] = (n + 1, time.time() + min(2 ** n, 30))
    stop(task, "TaskFailedToStart", reason)
    circuit_breaker(task)


# ---- deployments and the circuit breaker ----------------------------------
#
# moto keeps one deployment a service and never changes its rolloutState.
# ECS's rules, from the Developer Guide's "How the Amazon ECS deployment
# circuit breaker detects failures"
# (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-circuit-breaker.html)
# and the API reference's DeploymentCircuitBreaker and Deployment
# (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeploymentCircuitBreaker.html,
# https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Deployment.html):
# * a new deployment (a new task definition, or forceNewDeployment) starts
#   IN_PROGRESS and is COMPLETED once the service runs its desired count of
#   its tasks;
# * with the breaker on, tasks of an IN_PROGRESS deployment that fail to
#   start are counted (stage 1: tasks that never reach RUNNING); at the
#   threshold, 0.5 x the desired count, at least 3 and at most 200
#   (API_ServiceDeploymentCircuitBreaker.html), the deployment is FAILED with
#   "ECS deployment circuit breaker: tasks failed to start." and launches no
#   more tasks;
# * with rollback on, the service goes back to the last COMPLETED
#   deployment's task definition; a first deployment has none, so it stays
#   FAILED with what it runs;
# * a task that fails after the deployment COMPLETED (a scale-out) is not
#   counted: the breaker watches deployments, not scaling.


def breaker_threshold(desired):
    return min(200, max(3, -(-desired // 2)))


def deployment_of(svc, td_arn, gen):
    """The service's PRIMARY deployment, a new one when its task definition
    or forced generation changed."""
    with lock:
        d = deployments.get(svc["serviceArn"])
        if d is None or (d["taskDefinition"], d["_gen"]) != (td_arn, gen):
            completed = d if d and d["rolloutState"] == "COMPLETED" else (d or {}).get("_completed")
            did = "ecs-svc/" + str(uuid.uuid4().int)[:19]
            d = {
                "id": did,
                "status": "PRIMARY",
                "taskDefinition": td_arn,
                "rolloutState": "IN_PROGRESS",
                "rolloutStateReason": f"ECS deployment {did} in progress.",
                "failedTasks": 0,
                "createdAt": epoch(),
                "updatedAt": epoch(),
                "_gen": gen,
                "_completed": completed,
                "_svc": {k: svc[k] for k in ("serviceArn", "serviceName", "clusterArn")},
            }
            deployments[svc["serviceArn"]] = d
            log(f"deployment {did} of {svc['serviceName']} IN_PROGRESS ({td_arn.rsplit('/', 1)[-1]})")
        d["desiredCount"] = svc["desiredCount"]
        return d


def circuit_breaker(task):
    """Counts a failed start against its deployment, and fails (and rolls
    back) the deployment at the threshold."""
    with lock:
        d = deployments.get(task["service"])
        breaker = breakers.get(task["service"]) or {}
        if not d or d["rolloutState"] != "IN_PROGRESS" or not breaker.get("enable"):
            return
        if (task["taskDefinitionArn"], task["generation"]) != (d["taskDefinition"], d["_gen"]):
            return
        d["failedTasks"] += 1
        d["updatedAt"] = epoch()
        if d["failedTasks"] < breaker_threshold(d["desiredCount"]):
            return
        d["rolloutState"] = "FAILED"
        d["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start."
        back = d["_completed"] if breaker.get("rollback") else None
    svc = d["_svc"]
    log(f"deployment {d['id']} of {svc['serviceName']} FAILED after {d['failedTasks']} failed starts")
    service_event(svc, f"(deployment {d['id']}) deployment failed: tasks failed to start.")
    if back:
        service_event(svc, f"rolling back to deployment {back['id']}.")
        ecs.update_service(cluster=svc["clusterArn"], service=svc["serviceArn"], taskDefinition=back["taskDefinition"])


def deployment_json(d):
    return {k: v for k, v in d.items() if not k.startswith("_")}


def ssm_values(names):
    """The values of SSM parameters by name or ARN, decrypted; missing ones raise."""
    plain = [n.split(":parameter", 1)[1] if n.startswith("arn:") else n for n in names]
    out = ssm.get_parameters(Names=plain, WithDecryption=True)
    if out.get("InvalidParameters"):
        raise RuntimeError(f"invalid ssm parameters: {out['InvalidParameters']}")
    by_name = {p["Name"]: p["Value"] for p in out["Parameters"]}
    return [by_name[p] for p in plain]


def registry_login(image):
    host = image.split("/", 1)[0]
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    import base64

    user, password = base64.b64decode(token).decode().split(":", 1)
    r = subprocess.run(
        ["docker", "-H", args.docker_host, "login", "-u", user, "--password-stdin", host],
        input=password,
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_CONFIG": DOCKER_CONFIG},
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())


def health_args(check):
    """The task definition's container health check, run by docker (whose
    start interval, 5 s, checks more often during the start period)."""
    if not check:
        return []
    cmd = check["command"]
    shell = cmd[1] if cmd[0] == "CMD-SHELL" else " ".join(cmd[1:])
    return [
        "--health-cmd", shell,
        "--health-interval", f"{check.get('interval', 30)}s",
        "--health-timeout", f"{check.get('timeout', 5)}s",
        "--health-retries", str(check.get("retries", 3)),
        "--health-start-period", f"{check.get('startPeriod', 0)}s",
    ]


def start(task, td):
    """Runs a task: secrets, image, network namespace, container."""
    c = td["containerDefinitions"][0]
    pause, worker = container_names(task)
    if not task["ip"]:
        return failed_start(task, NO_FREE_ADDRESS.format(task["subnet"]))
    try:
        env = {e["name"]: e["value"] for e in c.get("environment", [])}
        secrets = c.get("secrets", [])
        if secrets:
            values = ssm_values([s["valueFrom"] for s in secrets])
            env.update({s["name"]: v for s, v in zip(secrets, values)})
    except Exception as e:  # noqa: BLE001 - reported as ECS does
        return failed_start(task, f"ResourceInitializationError: unable to pull secrets or registry auth: {e}")
    try:
        registry_login(c["image"])
        docker("pull", c["image"])
    except Exception as e:  # noqa: BLE001
        return failed_start(task, f"CannotPullContainerError: pull image manifest has been retried 1 time(s): {e}")
    if task["desiredStatus"] == "STOPPED":
        return
    if wrong_architecture(task, td, c["image"]):
        return
    set_state(task, "PENDING")
    try:
        docker("run", "-d", "--name", pause, "--network", "none", "--entrypoint", "sleep", c["image"], "infinity")
        pid = docker("inspect", "-f", "{{.State.Pid}}", pause).stdout.strip()
        veth = veth_name(task)
        ns = args.gateway_netns
        sh("ip", "-n", ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pid)
        sh("ip", "-n", ns, "link", "set", veth, "master", args.bridge, "up")
        enter = ["nsenter", f"--net=/proc/{pid}/ns/net"]
        sh(*enter, "ip", "addr", "add", f"{task['ip']}/{args.prefix_len}", "dev", "eth0")
        sh(*enter, "ip", "link", "set", "eth0", "up")
        sh(*enter, "ip", "link", "set", "lo", "up")
        sh(*enter, "ip", "route", "add", "default", "via", args.gateway_ip)
        with tempfile.NamedTemporaryFile("w", delete=False, dir=DOCKER_CONFIG) as f:
            os.chmod(f.name, 0o600)
            f.write("".join(f"{k}={v}\n" for k, v in env.items()))
        try:
            docker(
                "run", "-d", "--name", worker, "--network", f"container:{pause}",
                "--env-file", f.name, "--label", f"fossa-emu-task={task['arn']}",
                *health_args(c.get("healthCheck")), c["image"],
            )
        finally:
            os.unlink(f.name)
    except Exception as e:  # noqa: BLE001
        return failed_start(task, f"ResourceInitializationError: {e}")
    if task["desiredStatus"] == "STOPPED":
        return stop(task, "ServiceSchedulerInitiated", "Task stopped while starting")
    task["containers"][0]["lastStatus"] = "RUNNING"
    task["stopTimeout"] = c.get("stopTimeout") or DEFAULT_STOP_TIMEOUT
    set_state(task, "RUNNING", startedAt=epoch(), pullStoppedAt=epoch())
    lc = c.get("logConfiguration") or {}
    if lc.get("logDriver") == "awslogs":
        threading.Thread(target=ship_logs, args=(c, lc, task), daemon=True).start()


# Fargate runs a task on its task definition's CPU architecture: runtimePlatform's
# cpuArchitecture, X86_64 when there is none (RuntimePlatform, API reference:
# https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RuntimePlatform.html;
# "Amazon ECS task definitions for 64-bit ARM workloads":
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-arm64.html).
# An image for another architecture is pulled, but its entrypoint cannot run:
# the container exits at once ("exec format error") and the task stops as
# any task whose essential container exited. This host runs foreign images
# through qemu-user-static, so the emulator must refuse them itself.
ARCHITECTURES = {"amd64": "X86_64", "arm64": "ARM64"}


def task_architecture(td):
    return (td.get("runtimePlatform") or {}).get("cpuArchitecture") or "X86_64"


def wrong_architecture(task, td, image):
    have = docker("image", "inspect", "-f", "{{.Architecture}}", image, check=False).stdout.strip()
    want = task_architecture(td)
    if ARCHITECTURES.get(have, have) == want:
        return False
    log(f"task {task['id']}: image {image} is {have}, the task runs on {want}: exec format error")
    with lock:
        n, _ = failures.get(task["service"], (0, 0))
        failures[task["service"]] = (n + 1, time.time() + min(2 ** n, 30))
    task["containers"][0]["reason"] = f"exec format error: the image is {have}, the task runs on {want}"
    stop(task, "EssentialContainerExited", "Essential container in task exited", exit_code=255)
    circuit_breaker(task)
    return True


def ship_logs(container, log_config, task):
    """What the awslogs driver does: the container's output, line by line,
    into `<prefix>/<container name>/<task id>` of the task definition's group."""
    opts = log_config.get("options", {})
    group = opts.get("awslogs-group")
    stream = f"{opts.get('awslogs-stream-prefix', 'ecs')}/{container['name']}/{task['arn'].rsplit('/', 1)[1]}"
    _, worker = container_names(task)
    try:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    except Exception as e:  # noqa: BLE001 - the task runs on, as with awslogs
        log(f"awslogs: cannot create {group}/{stream}: {e}")
        return
    p = subprocess.Popen(
        ["docker", "-H", args.docker_host, "logs", "-f", worker],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env={**os.environ, "DOCKER_CONFIG": DOCKER_CONFIG},
    )
    for line in p.stdout:
        try:
            logs.put_log_events(
                logGroupName=group,
                logStreamName=stream,
                logEvents=[{"timestamp": int(time.time() * 1000), "message": line.rstrip("\n")}],
            )
        except Exception as e:  # noqa: BLE001
            log(f"awslogs: cannot put to {group}/{stream}: {e}")
    p.wait()


def watch_running():
    """A running task whose container exited is STOPPED, as ECS reports it."""
    with lock:
        running = [t for t in tasks.values() if t["lastStatus"] == "RUNNING" and not t.get("stopClaimed")]
    for t in running:
        _, worker = container_names(t)
        r = docker(
            "inspect", "-f",
            "{{.State.Running}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
            worker, check=False,
        )
        if r.returncode != 0:
            stop(t, "EssentialContainerExited", "Essential container in task exited", exit_code=137)
            continue
        running_now, code, health = r.stdout.split()
        t["healthStatus"] = {"healthy": "HEALTHY", "unhealthy": "UNHEALTHY", "none": "HEALTHY"}.get(health, "UNKNOWN")
        t["containers"][0]["healthStatus"] = t["healthStatus"]
        if running_now != "true":
            quick = epoch() - t.get("startedAt", epoch()) < 10
            if quick:
                with lock:
                    n, _ = failures.get(t["service"], (0, 0))
                    failures[t["service"]] = (n + 1, time.time() + min(2 ** n, 30))
            stop(t, "EssentialContainerExited", "Essential container in task exited", exit_code=int(code))
        elif failures.get(t["service"]) and epoch() - t.get("startedAt", epoch()) > 10:
            failures.pop(t["service"], None)


# ---- the service scheduler ------------------------------------------------


def subnet_cidrs(ids):
    out = ec2.describe_subnets(SubnetIds=ids)["Subnets"]
    return {s["SubnetId"]: (s["CidrBlock"], s["AvailabilityZone"]) for s in out}


def provider_for(svc):
    """The capacity provider of the service's next task: bases first, then
    the provider whose share of the tasks beyond the bases stays lowest, the
    heavier weight on a tie (as fossa_contract's StackConfig::spot_share)."""
    strategy = strategies.get(svc["serviceArn"]) or [{"capacityProvider": "FARGATE", "weight": 1}]
    with lock:
        placed = {
            s["capacityProvider"]: sum(
                1
                for t in tasks.values()
                if t["service"] == svc["serviceArn"] and t["desiredStatus"] == "RUNNING" and t["provider"] == s["capacityProvider"]
            )
            for s in strategy
        }
    for s in strategy:
        if placed[s["capacityProvider"]] < s.get("base", 0):
            return s["capacityProvider"]
    weighted = [s for s in strategy if s.get("weight", 0) > 0]
    best = min(weighted, key=lambda s: ((max(0, placed[s["capacityProvider"]] - s.get("base", 0)) + 1) / s["weight"], -s["weight"]))
    return best["capacityProvider"]


# A subnet keeps its first four addresses and its last for AWS ("Subnet CIDR
# blocks": https://docs.aws.amazon.com/vpc/latest/userguide/subnet-sizing.html);
# each task's ENI takes one of the rest, until the ENI is deleted a while
# after the task stopped (STOP_LINGER_SECS). With none free, Fargate cannot
# make the ENI and the task stops at once; the reason carries EC2's error
# code (InsufficientFreeAddressesInSubnet: "The specified subnet does not
# contain enough free private IP addresses to fulfill your request", EC2
# API error codes: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html;
# stopped task errors: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/stopped-task-error-codes.html).
# Only the tasks' ENIs are counted: our stacks' private subnets hold nothing else.
FIRST_HOST = 4
NO_FREE_ADDRESS = (
    "ResourceInitializationError: Unexpected EC2 error while attempting to Create Network Interface "
    "in subnet '{}': InsufficientFreeAddressesInSubnet"
)


def free_address(subnet, net):
    """A free address of `subnet` (`net`), or None; the caller holds the lock."""
    now = epoch()
    held = {
        t["ip"]
        for t in tasks.values()
        if t["subnet"] == subnet and t["ip"] and (t["lastStatus"] != "STOPPED" or now - t.get("stoppedAt", now) < STOP_LINGER_SECS)
    }
    hosts = net.num_addresses - 1 - FIRST_HOST
    start = next_host.get(subnet, FIRST_HOST)
    for i in range(hosts):
        h = FIRST_HOST + (start - FIRST_HOST + i) % hosts
        ip = str(net.network_address + h)
        if ip not in held:
            next_host[subnet] = h + 1
            return ip
    return None


def protected(task):
    return protection.get(task["arn"], 0) > epoch()


def new_task(cluster_arn, svc, td_arn, subnets):
    """A PROVISIONING task of `td_arn` in the least used of `subnets`."""
    with lock:
        use = {s: 0 for s in subnets}
        for t in tasks.values():
            if t["service"] == svc["serviceArn"] and t["desiredStatus"] == "RUNNING" and t["subnet"] in use:
                use[t["subnet"]] += 1
        subnet = min(sorted(use), key=lambda s: use[s])
        cidr, az = subnets[subnet]
        net = ipaddress.ip_network(cidr)
        ip = free_address(subnet, net)
        tid = uuid.uuid4().hex
        cluster_name = cluster_arn.rsplit("/", 1)[-1]
        arn = f"arn:aws:ecs:{REGION}:{cluster_arn.split(':')[4]}:task/{cluster_name}/{tid}"
        deployment = svc.get("deployments", [{}])[0].get("id", "ecs-svc/0000000000000000000")
        td = svc["_td"]
        provider = provider_for(svc)
        # "Linux tasks with the ARM64 architecture don't support the Fargate
        # Spot capacity provider" (AWS Fargate capacity providers:
        # https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-capacity-providers.html).
        # The page gives the rule, not ECS's words: the event says it plainly.
        if provider == "FARGATE_SPOT" and task_architecture(td) == "ARM64":
            service_event(svc, UNPLACED_ARM64_SPOT)
            return False
        in_use = sum(
            int(t["cpu"]) / 1024
            for t in tasks.values()
            if t["desiredStatus"] == "RUNNING" and t["provider"] == provider
        )
        if in_use + int(td.get("cpu", "256")) / 1024 > quota["vcpu"]:
            service_event(svc, UNPLACED_VCPU)
            return False
        task = {
            "id": tid,
            "arn": arn,
            "cluster": cluster_arn,
            "service": svc["serviceArn"],
            "taskDefinitionArn": td_arn,
            "subnet": subnet,
            "ip": ip,
            "az": az,
            "lastStatus": "PROVISIONING",
            "desiredStatus": "RUNNING",
            "createdAt": epoch(),
            "startedBy": deployment,
            "group": f"service:{svc['serviceName']}",
            "cpu": td.get("cpu", "256"),
            "memory": td.get("memory", "512"),
            "eni": "eni-" + tid[:17],
            "version": 1,
            "provider": provider,
            "generation": generations.get(svc["serviceArn"], 0),
            "containers": [
                {
                    "containerArn": f"{arn.replace(':task/', ':container/')}/{uuid.uuid4()}",
                    "taskArn": arn,
                    "name": td["containerDefinitions"][0]["name"],
                    "image": td["containerDefinitions"][0]["image"],
                    "lastStatus": "PENDING",
                }
            ],
        }
        tasks[arn] = task
    log(f"task {tid} PROVISIONING {ip or 'no address'} on {provider} for {svc['serviceName']} ({td_arn.rsplit('/', 1)[-1]})")
    threading.Thread(target=start, args=(task, td), daemon=True).start()
    return True


def reconcile_service(cluster_arn, svc):
    td_arn = svc["taskDefinition"]
    svc["_td"] = ecs.describe_task_definition(taskDefinition=td_arn)["taskDefinition"]
    want = svc["desiredCount"]
    conf = svc.get("deploymentConfiguration") or {}
    max_total = (want * conf.get("maximumPercent", 200)) // 100
    min_healthy = -(-want * conf.get("minimumHealthyPercent", 100) // 100)
    awsvpc = (svc.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
    subnets = subnet_cidrs(awsvpc.get("subnets") or [])
    with lock:
        mine = [t for t in tasks.values() if t["service"] == svc["serviceArn"] and t["desiredStatus"] == "RUNNING"]
    gen = generations.get(svc["serviceArn"], 0)
    deployment = deployment_of(svc, td_arn, gen)
    new = [t for t in mine if t["taskDefinitionArn"] == td_arn and t["generation"] == gen]
    old = [t for t in mine if t not in new]
    scaling = f"Scaling activity initiated by (deployment {svc.get('deployments', [{}])[0].get('id', 'ecs-svc')})"
    # Too many of the current revision: stop the newest unprotected first;
    # protected tasks run on above the desired count until released.
    spare = [t for t in new if not protected(t)]
    for t in sorted(spare, key=lambda t: t["createdAt"], reverse=True)[: max(0, len(new) - want)]:
        stop(t, "ServiceSchedulerInitiated", scaling)
    new = [t for t in new if t["desiredStatus"] == "RUNNING"]
    # Start what is missing, within maximumPercent, unless recent starts failed.
    _, not_before = failures.get(svc["serviceArn"], (0, 0))
    room = max(0, max_total - len(new) - len(old))
    if time.time() >= not_before and subnets and deployment["rolloutState"] != "FAILED":
        for _ in range(min(want - len(new), room)):
            if not new_task(cluster_arn, svc, td_arn, subnets):
                break
    # Stop old revisions while enough healthy tasks stay (a new task counts
    # once its container health check passes, as in an ECS deployment).
    healthy = [t for t in new if t["lastStatus"] == "RUNNING" and t.get("healthStatus") == "HEALTHY"]
    old_running = [t for t in old if t["lastStatus"] == "RUNNING"]
    for t in sorted(old, key=lambda t: t["lastStatus"] == "RUNNING"):
        if protected(t):
            continue
        if t["lastStatus"] != "RUNNING" or len(healthy) + len(old_running) - 1 >= min_healthy:
            if t in old_running:
                old_running.remove(t)
            stop(t, "ServiceSchedulerInitiated", scaling)
    # Whole again: ECS says so once.
    with lock:
        mine = [t for t in tasks.values() if t["service"] == svc["serviceArn"] and t["desiredStatus"] == "RUNNING"]
        said = events.get(svc["serviceArn"], [])
    whole = len(mine) == want and all(t["lastStatus"] == "RUNNING" and t["taskDefinitionArn"] == td_arn for t in mine)
    with lock:
        if whole and deployment["rolloutState"] == "IN_PROGRESS":
            deployment["rolloutState"] = "COMPLETED"
            deployment["rolloutStateReason"] = f"ECS deployment {deployment['id']} completed."
            deployment["updatedAt"] = epoch()
            log(f"deployment {deployment['id']} of {svc['serviceName']} COMPLETED")
    if whole and said and "steady state" not in said[0]["message"]:
        service_event(svc, "has reached a steady state.")


def reconcile():
    watch_running()
    seen = set()
    for cluster_arn in ecs.list_clusters()["clusterArns"]:
        cl = ecs.describe_clusters(clusters=[cluster_arn])["clusters"]
        if not cl or cl[0]["status"] != "ACTIVE":
            continue
        for page in ecs.get_paginator("list_services").paginate(cluster=cluster_arn):
            arns = page["serviceArns"]
            for i in range(0, len(arns), 10):
                for svc in ecs.describe_services(cluster=cluster_arn, services=arns[i : i + 10])["services"]:
                    if svc["status"] != "ACTIVE":
                        continue
                    seen.add(svc["serviceArn"])
                    reconcile_service(cluster_arn, svc)
    # Tasks of a service (or cluster) that is gone stop.
    with lock:
        orphans = [t for t in tasks.values() if t["desiredStatus"] == "RUNNING" and t["service"] not in seen]
    for t in orphans:
        stop(t, "ServiceSchedulerInitiated", "Service deleted")


def reconciler():
    while True:
        try:
            reconcile()
        except Exception as e:  # noqa: BLE001 - keep going, as ECS does
            log(f"reconcile: {e}")
        time.sleep(args.tick)


# ---- the ECS task API -----------------------------------------------------


def task_json(t):
    out = {
        "taskArn": t["arn"],
        "clusterArn": t["cluster"],
        "taskDefinitionArn": t["taskDefinitionArn"],
        "lastStatus": t["lastStatus"],
        "desiredStatus": t["desiredStatus"],
        "capacityProviderName": t["provider"],
        "platformVersion": "1.4.0",
        "platformFamily": "Linux",
        "availabilityZone": t["az"],
        "group": t["group"],
        "startedBy": t["startedBy"],
        "cpu": t["cpu"],
        "memory": t["memory"],
        "createdAt": t["createdAt"],
        "version": t["version"],
        "connectivity": "CONNECTED" if t["lastStatus"] in ("PENDING", "RUNNING") else "DISCONNECTED",
        "attachments": [
            {
                "id": str(uuid.UUID(t["id"])),
                "type": "ElasticNetworkInterface",
                "status": "ATTACHED" if t["lastStatus"] != "STOPPED" else "DELETED",
                "details": [
                    {"name": "subnetId", "value": t["subnet"]},
                    {"name": "networkInterfaceId", "value": t["eni"]},
                    {"name": "privateIPv4Address", "value": t["ip"]},
                ],
            }
        ],
        "containers": [
            {**c, "networkInterfaces": [{"attachmentId": str(uuid.UUID(t["id"])), "privateIpv4Address": t["ip"]}]}
            for c in t["containers"]
        ],
    }
    for k in ("healthStatus", "startedAt", "pullStoppedAt", "stoppingAt", "stoppedAt", "executionStoppedAt", "stopCode", "stoppedReason"):
        if k in t:
            out[k] = t[k]
    return out


def cluster_matches(t, cluster):
    cluster = cluster or "default"
    return t["cluster"] == cluster or t["cluster"].rsplit("/", 1)[-1] == cluster


def list_tasks(req):
    desired = req.get("desiredStatus", "RUNNING")
    with lock:
        arns = [
            t["arn"]
            for t in sorted(tasks.values(), key=lambda t: t["createdAt"])
            if cluster_matches(t, req.get("cluster"))
            and t["desiredStatus"] == desired
            and (not req.get("serviceName") or t["group"] == f"service:{req['serviceName'].rsplit('/', 1)[-1]}")
        ]
    start = int(req.get("nextToken") or 0)
    size = int(req.get("maxResults") or 100)
    out = {"taskArns": arns[start : start + size]}
    if start + size < len(arns):
        out["nextToken"] = str(start + size)
    return 200, out


def find(ref):
    return tasks.get(ref) or next((t for t in tasks.values() if t["id"] == ref), None)


def describe_tasks(req):
    found, failures_ = [], []
    with lock:
        for ref in req.get("tasks", []):
            t = find(ref)
            if t and cluster_matches(t, req.get("cluster")):
                found.append(task_json(t))
            else:
                failures_.append({"arn": ref, "reason": "MISSING"})
    return 200, {"tasks": found, "failures": failures_}


def stop_task(req):
    t = find(req.get("task", ""))
    if not t or not cluster_matches(t, req.get("cluster")):
        return 400, {"__type": "InvalidParameterException", "message": "The referenced task was not found."}
    stop(t, "UserInitiated", req.get("reason") or "Task stopped by user")
    return 200, {"task": task_json(t)}


def patch_services(body):
    out = json.loads(body)
    with lock:
        for s in out.get("services", []):
            if s.get("serviceArn") in strategies:
                s["capacityProviderStrategy"] = strategies[s["serviceArn"]]
                s.pop("launchType", None)
            mine = [t for t in tasks.values() if t["service"] == s.get("serviceArn") and t["desiredStatus"] == "RUNNING"]
            s["runningCount"] = sum(t["lastStatus"] == "RUNNING" for t in mine)
            s["pendingCount"] = sum(t["lastStatus"] != "RUNNING" for t in mine)
            s["events"] = list(events.get(s.get("serviceArn"), []))
            d = deployments.get(s.get("serviceArn"))
            if d and d["taskDefinition"] == s.get("taskDefinition"):
                primary = dict(deployment_json(d), runningCount=s["runningCount"], pendingCount=s["pendingCount"])
                s["deployments"] = [primary]
    return json.dumps(out).encode()


def update_task_protection(req):
    on = bool(req.get("protectionEnabled"))
    minutes = int(req.get("expiresInMinutes") or 120)
    if not 1 <= minutes <= 2880:
        return 400, {"__type": "InvalidParameterException", "message": "expiresInMinutes must be between 1 and 2880."}
    if len(req.get("tasks", [])) > 10:
        return 400, {"__type": "InvalidParameterException", "message": "Tasks can have at most 10 items."}
    done, failed = [], []
    with lock:
        for ref in req.get("tasks", []):
            t = find(ref)
            if not t or not cluster_matches(t, req.get("cluster")) or t["desiredStatus"] != "RUNNING":
                failed.append({"arn": ref, "reason": "TASK_NOT_VALID", "detail": "The task is not running."})
                continue
            if on:
                protection[t["arn"]] = epoch() + 60 * minutes
            else:
                protection.pop(t["arn"], None)
            item = {"taskArn": t["arn"], "protectionEnabled": on}
            if on:
                item["expirationDate"] = protection[t["arn"]]
            done.append(item)
    log(f"protection {'on' if on else 'off'}: {' '.join(d['taskArn'].rsplit('/', 1)[-1][:8] for d in done)}")
    return 200, {"protectedTasks": done, "failures": failed}


def get_task_protection(req):
    out = []
    with lock:
        for ref in req.get("tasks", []):
            t = find(ref)
            if t:
                on = protected(t)
                item = {"taskArn": t["arn"], "protectionEnabled": on}
                if on:
                    item["expirationDate"] = protection[t["arn"]]
                out.append(item)
    return 200, {"protectedTasks": out, "failures": []}


def record_strategy(op, req, data):
    """After moto took a CreateService or UpdateService: the strategy it
    dropped, and a new deployment when one was forced."""
    svc = (json.loads(data or b"{}").get("service") or {})
    arn = svc.get("serviceArn")
    if not arn:
        return
    with lock:
        if req.get("capacityProviderStrategy"):
            strategies[arn] = req["capacityProviderStrategy"]
        breaker = (req.get("deploymentConfiguration") or {}).get("deploymentCircuitBreaker")
        if breaker is not None:
            breakers[arn] = breaker
        if op == "UpdateService" and req.get("forceNewDeployment"):
            generations[arn] = generations.get(arn, 0) + 1
            log(f"new deployment {generations[arn]} of {svc.get('serviceName')} (strategy {strategies.get(arn)})")


FARGATE_QUOTAS = {"L-3032A538": "Fargate On-Demand vCPU resource count", "L-36FBB829": "Fargate Spot vCPU resource count"}


def service_quota(req):
    code = req.get("QuotaCode")
    if req.get("ServiceCode") != "fargate" or code not in FARGATE_QUOTAS:
        return 400, {"__type": "NoSuchResourceException", "message": "The request failed because the specified resource does not exist."}
    return 200, {
        "Quota": {
            "ServiceCode": "fargate",
            "ServiceName": "AWS Fargate",
            "QuotaCode": code,
            "QuotaName": FARGATE_QUOTAS[code],
            "Value": quota["vcpu"],
            "Unit": "None",
            "Adjustable": True,
            "GlobalQuota": False,
        }
    }


def interrupt(req):
    t = find(req.get("task", ""))
    if not t or t["desiredStatus"] != "RUNNING":
        return 400, {"message": "no such running task"}
    if t["provider"] != "FARGATE_SPOT":
        return 400, {"message": f"task {t['id']} runs on {t['provider']}, not FARGATE_SPOT"}
    stop(t, "SpotInterruption", "Your Spot Task was interrupted.")
    return 200, {"task": t["arn"]}


# AWS's rules the emulator enforces before moto sees a call: each returns
# None, or the (status, error) AWS answers, and names the page it comes from.


def fargate_size_rule(req):
    """RegisterTaskDefinition for FARGATE takes only the documented CPU and
    memory pairs (API reference, RegisterTaskDefinition `memory`:
    https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RegisterTaskDefinition.html;
    https://docs.aws.amazon.com/AmazonECS/latest/userguide/task-cpu-memory-error.html)."""
    if "FARGATE" not in (req.get("requiresCompatibilities") or []):
        return None
    sizes = {
        256: [512, 1024, 2048],
        512: list(range(1024, 4096 + 1, 1024)),
        1024: list(range(2048, 8192 + 1, 1024)),
        2048: list(range(4096, 16384 + 1, 1024)),
        4096: list(range(8192, 30720 + 1, 1024)),
        8192: list(range(16384, 61440 + 1, 4096)),
        16384: list(range(32768, 122880 + 1, 8192)),
    }
    try:
        cpu, memory = int(req.get("cpu")), int(req.get("memory"))
    except (TypeError, ValueError):
        return 400, {"__type": "ClientException", "message": "Fargate requires that 'cpu' be defined at the task level."}
    if cpu not in sizes:
        return 400, {"__type": "ClientException", "message": "Invalid 'cpu' setting for task."}
    if memory not in sizes[cpu]:
        return 400, {
            "__type": "ClientException",
            "message": f"No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. "
            "See the Amazon ECS documentation for the valid values.",
        }
    return None


def service_linked_role_rule(req):
    """ECS works through its service-linked role, AWSServiceRoleForECS, and
    makes it on first use only if the caller may (CreateCluster API reference:
    https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_CreateCluster.html;
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/using-service-linked-roles.html).
    The gateway role may not, so in an account without the role CreateCluster
    and CreateService fail."""
    # By its path, not its name: moto names it AWSServiceRoleForecs where AWS
    # says AWSServiceRoleForECS.
    roles = iam.list_roles(PathPrefix="/aws-service-role/ecs.amazonaws.com/")["Roles"]
    if not roles:
        return 400, {
            "__type": "InvalidParameterException",
            "message": "Unable to assume the service linked role. Please verify that the ECS service linked role exists.",
        }
    return None


# Seconds after CreateInstanceProfile during which EC2 does not know it yet.
PROFILE_PROPAGATION_SECS = 6


def instance_profile_propagation_rule(form):
    """IAM is eventually consistent: an instance profile made a moment ago is
    not usable by EC2 yet, and RunInstances says so with InvalidParameterValue
    ("IAM is eventually consistent":
    https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency;
    RunInstances errors: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html)."""
    name = (form.get("IamInstanceProfile.Name") or [None])[0]
    if not name:
        return None
    try:
        made = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["CreateDate"]
    except iam.exceptions.NoSuchEntityException:
        made = None
    if made is not None and time.time() - made.timestamp() > PROFILE_PROPAGATION_SECS:
        return None
    message = f"Value ({name}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
    return 400, ec2_error("InvalidParameterValue", message)


# EC2's API is eventually consistent: for a moment after a create, the
# next calls about what it made get Invalid*.NotFound ("Eventual consistency
# in the Amazon EC2 API":
# https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html).
CONSISTENCY_SECS = 2
# What each create makes, by the response's element that names it.
CREATED = {
    "RunInstances": ("instanceId", "networkInterfaceId"),
    "CreateInternetGateway": ("internetGatewayId",),
    "CreateSecurityGroup": ("groupId",),
    "CreateRouteTable": ("routeTableId",),
}
# The calls that come right after those creates.
AFTER_CREATE = {"ModifyInstanceAttribute", "AttachInternetGateway", "AuthorizeSecurityGroupIngress", "CreateRoute", "ReplaceRoute"}
NOT_FOUND = {
    "i-": ("InvalidInstanceID.NotFound", "The instance ID '{}' does not exist"),
    "igw-": ("InvalidInternetGatewayID.NotFound", "The internetGateway ID '{}' does not exist"),
    "sg-": ("InvalidGroup.NotFound", "The security group '{}' does not exist"),
    "rtb-": ("InvalidRouteTableID.NotFound", "The routeTable ID '{}' does not exist"),
    "eni-": ("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '{}' does not exist"),
}
made = {}


def ec2_error(code, message):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    )


def record_created(action, data):
    now = time.time()
    for element in CREATED.get(action, ()):
        for m in re.finditer(f"<{element}>([^<]+)</{element}>".encode(), data):
            made[m.group(1).decode()] = now


def consistency_rule(action, form):
    if action not in AFTER_CREATE:
        return None
    now = time.time()
    for values in form.values():
        for v in values:
            if now - made.get(v, 0) < CONSISTENCY_SECS:
                code, message = next(cm for p, cm in NOT_FOUND.items() if v.startswith(p))
                return 400, ec2_error(code, message.format(v))
    return None


# EC2's Query API: the action's rule takes the form's fields, and answers XML.
EC2_RULES = {
    "RunInstances": instance_profile_propagation_rule,
}


# Seconds a stopped task still holds its cluster (DEPROVISIONING, its ENI
# being released); ECS takes tens of seconds.
STOP_LINGER_SECS = 8


def cluster_with_tasks_rule(req):
    """DeleteCluster refuses a cluster whose tasks are not all stopped and
    deprovisioned: ClusterContainsTasksException (DeleteCluster API reference:
    https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeleteCluster.html;
    task lifecycle, DEACTIVATING -> STOPPING -> DEPROVISIONING -> STOPPED:
    https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html)."""
    now = epoch()
    with lock:
        active = [
            t
            for t in tasks.values()
            if cluster_matches(t, req.get("cluster"))
            and (t["lastStatus"] != "STOPPED" or now - t.get("stoppedAt", 0) < STOP_LINGER_SECS)
        ]
    if not active:
        return None
    return 400, {
        "__type": "ClusterContainsTasksException",
        "message": "The Cluster cannot be deleted while Tasks are active.",
    }


RULES = {
    "RegisterTaskDefinition": fargate_size_rule,
    "DeleteCluster": cluster_with_tasks_rule,
    "CreateCluster": service_linked_role_rule,
    "CreateService": service_linked_role_rule,
}


# ---- IAM on the calls it answers itself -----------------------------------
#
# moto, started with INITIAL_NO_AUTH_ACTION_COUNT, evaluates the signer's
# policies on every call it gets; the calls the emulator answers (HANDLERS,
# GetServiceQuota, and those RULES refuse) never reach it, so with
# --enforce-iam the emulator evaluates them the same way: the identity-based
# policies of the user whose access key signed the call; allowed only if a
# statement allows the action and none denies it ("Policy evaluation logic":
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).
# Like moto's, its evaluation sees actions, not resources or conditions.
identity_cache = {}  # access key id -> (checked at, user ARN, [statement])


def signer_statements(headers):
    m = re.search(r"Credential=([A-Z0-9]+)/", headers.get("Authorization", ""))
    if not m:
        return None, []
    akid = m.group(1)
    now = time.time()
    cached = identity_cache.get(akid)
    if cached and now - cached[0] < 5:
        return cached[1], cached[2]
    try:
        user = iam.get_access_key_last_used(AccessKeyId=akid)["UserName"]
    except Exception:  # noqa: BLE001 - an unknown key is refused below
        return None, []
    docs = [iam.get_user_policy(UserName=user, PolicyName=n)["PolicyDocument"] for n in iam.list_user_policies(UserName=user)["PolicyNames"]]
    for a in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]:
        version = iam.get_policy(PolicyArn=a["PolicyArn"])["Policy"]["DefaultVersionId"]
        docs.append(iam.get_policy_version(PolicyArn=a["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"])
    statements = []
    for d in docs:
        d = json.loads(urllib.parse.unquote(d)) if isinstance(d, str) else d
        st = d["Statement"]
        statements.extend(st if isinstance(st, list) else [st])
    arn = f"arn:aws:iam::{ACCOUNT}:user/{user}"
    identity_cache[akid] = (now, arn, statements)
    return arn, statements


def action_matches(patterns, action):
    patterns = patterns if isinstance(patterns, list) else [patterns]
    return any(re.fullmatch(re.escape(p).replace(r"\*", ".*").replace(r"\?", "."), action, re.I) for p in patterns)


def iam_refusal(headers, action):
    """None if the signer may call `action`, else AWS's AccessDeniedException."""
    if not args.enforce_iam:
        return None
    arn, statements = signer_statements(headers)
    if arn is None:
        return 400, {"__type": "UnrecognizedClientException", "message": "The security token included in the request is invalid."}
    allowed = False
    for st in statements:
        if "Action" in st and action_matches(st["Action"], action):
            if st.get("Effect") == "Deny":
                allowed = False
                break
            allowed = True
    if allowed:
        return None
    return 400, {
        "__type": "AccessDeniedException",
        "message": f"User: {arn} is not authorized to perform: {action} because no identity-based policy allows the {action} action",
    }


# ECS throttles each account's calls per Region with a token bucket per
# category of actions: (maximum capacity, refill per second), from "Request
# throttling for the Amazon ECS API", its "Request Token Bucket Sizes and
# Refill Rates" table
# (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/request-throttling.html).
# Beyond them: ThrottlingException, "Rate exceeded". ECS's own scheduler
# (the reconciler here) is not the account's caller and is not counted.
THROTTLE_BUCKETS = {
    ("CreateCluster", "DeleteCluster", "PutClusterCapacityProviders", "UpdateCluster", "UpdateClusterSettings"): (20, 1),
    ("DescribeClusters", "ListClusters"): (50, 20),
    ("DeregisterTaskDefinition", "RegisterTaskDefinition"): (20, 1),
    ("DescribeTaskDefinition", "ListTaskDefinitions", "ListTaskDefinitionFamilies"): (50, 20),
    ("DeleteTaskDefinitions",): (5, 1),
    ("TagResource", "UntagResource"): (20, 10),
    ("ListTagsForResource",): (50, 20),
    ("RunTask", "StartTask", "StopTask"): (100, 40),
    ("DescribeTasks", "ListTasks"): (100, 20),
    ("CreateService", "DeleteService", "UpdateService"): (50, 5),
    ("DescribeServices", "ListServices"): (100, 20),
    ("UpdateTaskProtection", "GetTaskProtection"): (200, 80),
}
buckets = {}  # the category's actions -> [tokens, last refill]


def throttled(op):
    """AWS's ThrottlingException once `op`'s bucket is empty, else None (one token taken)."""
    category = next((c for c in THROTTLE_BUCKETS if op in c), None)
    if category is None:
        return None
    capacity, refill = THROTTLE_BUCKETS[category]
    now = time.monotonic()
    with lock:
        tokens, last = buckets.get(category, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * refill)
        if tokens < 1:
            buckets[category] = (tokens, now)
            return 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
        buckets[category] = (tokens - 1, now)
    return None


HANDLERS = {
    "UpdateTaskProtection": update_task_protection,
    "GetTaskProtection": get_task_protection,
    "ListTasks": list_tasks,
    "DescribeTasks": describe_tasks,
    "StopTask": stop_task,
}


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, data, ctype="application/x-amz-json-1.1", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/_emulator/quota":
            quota["vcpu"] = float(json.loads(body or b"{}")["vcpu"])
            log(f"vCPU quota now {quota['vcpu']} for each provider")
            return self.reply(200, json.dumps(quota).encode(), ctype="application/json")
        if self.path == "/_emulator/interrupt":
            status, out = interrupt(json.loads(body or b"{}"))
            return self.reply(status, json.dumps(out).encode(), ctype="application/json")
        target = self.headers.get("X-Amz-Target", "")
        action = ""
        if not target and body[:7] == b"Action=":
            form = urllib.parse.parse_qs(body.decode(errors="replace"))
            action = (form.get("Action") or [""])[0]
            refused = EC2_RULES[action](form) if action in EC2_RULES else None
            refused = refused or consistency_rule(action, form)
            if refused:
                status, xml = refused
                log(f"{action} refused: {xml}")
                return self.reply(status, xml.encode(), ctype="text/xml")
        if target == "ServiceQuotasV20190624.GetServiceQuota":
            refused = iam_refusal(self.headers, "servicequotas:GetServiceQuota")
            if refused:
                status, out = refused
                return self.reply(status, json.dumps(out).encode(), headers=[("x-amzn-ErrorType", out["__type"])])
            status, out = service_quota(json.loads(body or b"{}"))
            extra = [("x-amzn-ErrorType", out["__type"])] if status != 200 else []
            return self.reply(status, json.dumps(out).encode(), headers=extra)
        op = target.rsplit(".", 1)[-1] if target.startswith("AmazonEC2ContainerService") else ""
        refused = throttled(op) if op else None
        refused = refused or (iam_refusal(self.headers, f"ecs:{op}") if op in RULES or op in HANDLERS else None)
        refused = refused or (RULES[op](json.loads(body or b"{}")) if op in RULES else None)
        if refused:
            status, out = refused
            log(f"{op} refused: {out['message']}")
            return self.reply(status, json.dumps(out).encode(), headers=[("x-amzn-ErrorType", out["__type"])])
        if op in HANDLERS:
            status, out = HANDLERS[op](json.loads(body or b"{}"))
            extra = [("x-amzn-ErrorType", out["__type"])] if status != 200 else []
            return self.reply(status, json.dumps(out).encode(), headers=extra)
        conn = http.client.HTTPConnection("127.0.0.1", args.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        headers["Host"] = self.headers.get("Host", "")
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if op == "DescribeServices" and resp.status == 200:
            data = patch_services(data)
        if action in CREATED and resp.status == 200:
            record_created(action, data)
        if op in ("CreateService", "UpdateService") and resp.status == 200:
            record_strategy(op, json.loads(body or b"{}"), data)
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


def shutdown_containers():
    r = docker("ps", "-aq", "--filter", "name=fossa-emu-", check=False)
    ids = r.stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)


if __name__ == "__main__":
    import signal

    def on_term(*_):
        shutdown_containers()
        shutil.rmtree(DOCKER_CONFIG, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=reconciler, daemon=True).start()
    log(f"fargate emulator on 127.0.0.1:{args.listen} in front of moto on {args.upstream}")
    http.server.ThreadingHTTPServer(("127.0.0.1", args.listen), Proxy).serve_forever()
