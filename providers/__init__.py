"""Phoenix's dynamic providers and the two channels to a Proxmox host (SSH and the PVE API).

Only ``providers/ssh*`` imports paramiko and only ``providers/pve*`` imports proxmoxer; everything else
talks to the host through the small :class:`providers.command.Executor` seam.
"""
