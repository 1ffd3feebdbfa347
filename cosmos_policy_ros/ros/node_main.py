"""The one ``main()`` every node of this package runs: init, build, spin until SIGINT, clean shutdown."""
from __future__ import annotations

import sys
from typing import Callable, List, Optional

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def run_node(factory: Callable[[], Node], name: str, args: Optional[List[str]] = None,
             executor_factory: Callable[[], Executor] = SingleThreadedExecutor) -> int:
    """Run the node ``factory()`` builds until SIGINT or shutdown; return the process exit code.

    A ValueError while the node is being built is an invalid configuration (bad parameter): it is printed
    as one clear line and the exit code is 2, instead of a traceback. Errors while spinning propagate, except
    the ones a callback meets because SIGINT shut the context down while it ran (its publish on the closed
    context raises): that is the requested stop, exit code 0, with one line saying so.
    """
    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        executor = executor_factory()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is one of the two cases below
        if node is None and isinstance(exc, ValueError):
            print(f"{name}: invalid configuration: {exc}", file=sys.stderr)
            return 2
        if node is None or rclpy.ok():
            raise
        print(f"{name}: stopped while a callback ran ({type(exc).__name__}: {exc})", file=sys.stderr)
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
