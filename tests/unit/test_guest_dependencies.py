"""`after` between guests: the build order, and the boot order PVE gets when none is given."""

from __future__ import annotations

from phoenix_components.config.load import dependency_order, start_orders, with_start_orders
from phoenix_components.config.models import Container, Guests, Network, Startup, Vm


def ct(vmid: int, after: list[int] = [], startup: Startup | None = None) -> Container:  # noqa: B006
    return Container(
        vmid=vmid,
        hostname=f"ct{vmid}",
        layer="base",
        network=Network(ip="dhcp"),
        after=after,
        startup=startup,
    )


def vm(vmid: int, after: list[int] = []) -> Vm:  # noqa: B006
    return Vm(vmid=vmid, name=f"vm{vmid}", image="debian", network=Network(ip="dhcp"), after=after)


def test_dependencies_come_first_and_the_file_order_is_kept_otherwise() -> None:
    guests = [ct(300, after=[302]), ct(301), ct(302, after=[310]), vm(310)]
    assert [g.vmid for g in dependency_order(guests)] == [310, 302, 300, 301]


def test_the_order_is_the_dependency_depth_and_a_guest_in_no_dependency_gets_none() -> None:
    guests = Guests(containers=[ct(300, after=[302, 301]), ct(301), ct(302, after=[301]), ct(303)])
    assert start_orders(guests) == {300: 2, 301: 0, 302: 1}
    ordered = with_start_orders(guests)
    assert [c.startup for c in ordered.containers] == [
        Startup(order=2),
        Startup(order=0),
        Startup(order=1),
        None,
    ]


def test_a_given_order_counts_and_given_delays_are_kept() -> None:
    guests = Guests(
        containers=[ct(300, startup=Startup(order=10)), ct(301, after=[300], startup=Startup(up=30))]
    )
    assert start_orders(guests) == {300: 10, 301: 11}
    assert with_start_orders(guests).containers[1].startup == Startup(order=11, up=30)
