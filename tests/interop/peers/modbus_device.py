"""A Modbus device served by pymodbus, a peer nobody on this project wrote.

Unit 1 is laid out like an In-Situ Aqua TROLL 400 (pH, conductivity and temperature
blocks with data quality ids, big-endian floats), unit 2 like a KELLER Series 30 level
probe (P1 and TOB1 floats), both in holding registers. Unit 3 is a counter: every read
of its holding registers returns the next integer in register 0, so a test can tell whether every
reading a gateway took reached the store exactly once. Holding registers 1000..1999 of
every unit are free for mailbox deliveries, 10..19 for writes.

Usage: modbus_device.py --tcp PORT | --rtu DEVICE [--baud 9600]
"""

import argparse
import asyncio
import struct
import sys

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer

SIZE = 13000


def f32(v):
    hi, lo = struct.unpack(">HH", struct.pack(">f", v))
    return [hi, lo]


class Counter:
    """Counts the answers to reads of unit 3's holding registers and puts the count into
    the first register of each answer (a hook on the PDUs the server sends)."""

    def __init__(self):
        self.n = 0

    def trace_pdu(self, sending, pdu):
        if sending and getattr(pdu, "dev_id", None) == 3 and pdu.function_code == 3 and pdu.registers:
            self.n += 1
            pdu.registers = [self.n & 0xFFFF] + list(pdu.registers[1:])
        return pdu


def troll():
    hr = [0] * SIZE
    for addr, words in [(1537, f32(7.25)), (537, f32(412.0)), (529, f32(14.5)), (1541, [0]), (541, [0]), (533, [0])]:
        hr[addr : addr + len(words)] = words
    return ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, hr), co=ModbusSequentialDataBlock(1, [0] * 100))


def keller():
    hr = [0] * SIZE
    hr[2:4] = f32(0.3)
    hr[8:10] = f32(14.5)
    return ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, hr), co=ModbusSequentialDataBlock(1, [0] * 100))


def counter():
    return ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [0] * SIZE), co=ModbusSequentialDataBlock(1, [0] * 100))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tcp", type=int)
    p.add_argument("--rtu")
    p.add_argument("--baud", type=int, default=9600)
    a = p.parse_args()
    ctx = ModbusServerContext(devices={1: troll(), 2: keller(), 3: counter()}, single=False)
    count = Counter()
    print("serving", flush=True)
    if a.tcp:
        await StartAsyncTcpServer(context=ctx, address=("127.0.0.1", a.tcp), trace_pdu=count.trace_pdu)
    elif a.rtu:
        await StartAsyncSerialServer(
            context=ctx, framer=FramerType.RTU, port=a.rtu, baudrate=a.baud, trace_pdu=count.trace_pdu
        )
    else:
        sys.exit("--tcp PORT or --rtu DEVICE")


asyncio.run(main())
