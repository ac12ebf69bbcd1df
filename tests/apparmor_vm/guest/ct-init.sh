#!/bin/sh
# PID 1 of the unprivileged LXC container in the AppArmor VM (lxc.init.cmd). Runs the escape probes as the
# container's root, then Debian's docker.io: dockerd, `docker import` of a busybox tarball built here,
# `docker run --rm`. Every step's result is a JSON line in /out/ct.jsonl; the container stops when this
# script exits.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
OUT=/out/ct.jsonl
SPEC=$(cat /out/spec.json)
t0=$(cut -d' ' -f1 /proc/uptime)
step() { # step NAME RC DETAIL: one JSON line, detail JSON-quoted by python
	python3 -c 'import json,sys; print(json.dumps({"where": "container", "probe": "docker_" + sys.argv[1], "target": "docker", "allowed": sys.argv[2] == "0", "rc": int(sys.argv[2]), "detail": sys.argv[3][-3000:], "uptime": float(open("/proc/uptime").read().split()[0])}))' "$1" "$2" "$3" >>"$OUT"
}
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
python3 /lab/probe.py container "$SPEC" >>"$OUT" 2>/out/probe.err
python3 -c 'import json,sys; sys.exit(0 if json.load(open("/out/spec.json"))["docker"] else 1)' || exit 0

# cgroup v2 "no internal processes": move ourselves out of the container's root cgroup so dockerd can
# enable controllers for the cgroups it creates (what docker's own dind entrypoint does).
mkdir -p /sys/fs/cgroup/init
echo $$ >/sys/fs/cgroup/init/cgroup.procs
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; done

dockerd --bridge=none --iptables=false --ip6tables=false --storage-driver=vfs >/out/dockerd.log 2>&1 &
deadline=$(( $(cut -d. -f1 /proc/uptime) + 240 ))
until docker version >/dev/null 2>&1; do
	if [ "$(cut -d. -f1 /proc/uptime)" -ge "$deadline" ]; then
		step dockerd_ready 1 "$(tail -c 3000 /out/dockerd.log)"
		exit 0
	fi
	sleep 0.5
done
step dockerd_ready 0 "$(docker version --format '{{.Server.Version}} runc {{range .Server.Components}}{{.Name}}={{.Version}} {{end}}' 2>&1)"

mkdir -p /tmp/img/bin
cp /bin/busybox /tmp/img/bin/busybox
ln -s busybox /tmp/img/bin/sh
tar -C /tmp/img -cf /tmp/img.tar .
out=$(docker import /tmp/img.tar phoenix-lab/busybox:local 2>&1)
step import $? "$out"
out=$(docker run --rm --network none phoenix-lab/busybox:local /bin/busybox echo phoenix-nested-docker-ok 2>&1)
step run $? "$out"
out=$(docker run --rm --network none phoenix-lab/busybox:local /bin/busybox cat /proc/self/attr/current 2>&1)
step run_label $? "$out"
kill %1 2>/dev/null
exit 0
