# Sourced by tests/proxy/run and scripts/bench-proxy (both set $drv to
# proxy-drv). next_port: a free TCP port from the kernel (proxy-drv port:
# bind to port 0), never one handed out before in this run (the kernel may
# offer a just-closed one again). Sets $port_out; call it without $(...),
# so the list of used ports survives.
used_ports=" "
next_port() {
	local p i
	for i in $(seq 50); do
		p=$("$drv" port 2>/dev/null) || p=$((20000 + RANDOM % 20000))
		[[ $used_ports == *" $p "* ]] && continue
		used_ports+="$p "
		port_out=$p
		return 0
	done
	return 1
}
