import { describe, expect, it } from "vitest";

import type { DeviceDoc } from "./api";
import { diffLines, errorPlace, fromInput, parseWriteValue, toInput } from "./form";

const doc: DeviceDoc = {
  id: "press-1", enterprise: "acme", site: "berlin", area: "stamping", line: "line-1", protocol: "modbus_tcp",
  tags: [{ name: "temp" }, { name: "setpoint" }],
};

describe("the device form", () => {
  it("shows an API error on the field it names", () => {
    expect(errorPlace("device.interval_ms", doc)).toBe("device.interval_ms");
    expect(errorPlace("device.host", doc)).toBe("device.host");
    expect(errorPlace("device.tags[1].address", doc)).toBe("device.tags[1].address");
    expect(errorPlace("device.tags[1].transform", doc)).toBe("device.tags[1]"); // not in the form: the row
    expect(errorPlace("device.tags[0]", doc)).toBe("device.tags[0]");
    expect(errorPlace("device.tags[5].address", doc)).toBeNull(); // no such row: the banner
    expect(errorPlace("device.endpoint", doc)).toBeNull(); // another protocol's key
    expect(errorPlace("device.endpoint", { ...doc, protocol: "opcua" })).toBe("device.endpoint");
    expect(errorPlace("If-Match", doc)).toBeNull();
  });

  it("turns input text into JSON values and back", () => {
    expect(fromInput("")).toBeUndefined();
    expect(fromInput("200")).toBe(200);
    expect(fromInput("-1.5e3")).toBe(-1500);
    expect(fromInput("007")).toBe("007");
    expect(fromInput("10.0.0.5")).toBe("10.0.0.5");
    expect(fromInput("abc")).toBe("abc");
    expect(toInput(undefined)).toBe("");
    expect(toInput(502)).toBe("502");
    expect(toInput({ scale: 0.1 })).toBe('{"scale":0.1}');
  });
});

describe("writes and the audit's changes", () => {
  it("reads a typed value by the tag's type", () => {
    expect(parseWriteValue("42", "int16")).toBe(42);
    expect(parseWriteValue(" -1.5 ", "float32")).toBe(-1.5);
    expect(() => parseWriteValue("abc", "int16")).toThrow("a number");
    expect(() => parseWriteValue("", "int16")).toThrow("a number");
    expect(parseWriteValue("ON", "bool")).toBe(true);
    expect(parseWriteValue("0", "bool")).toBe(false);
    expect(() => parseWriteValue("maybe", "bool")).toThrow("a bool");
    expect(parseWriteValue(" RECIPE 7 ", "string")).toBe(" RECIPE 7 ");
  });

  it("lists what changed between two documents", () => {
    expect(diffLines(null, { a: 1 })).toEqual(["created"]);
    expect(diffLines({ a: 1 }, null)).toEqual(["deleted"]);
    expect(diffLines({ a: 1, b: 2, c: 3 }, { a: 1, b: 5, d: 4 })).toEqual(["~ b: 2 → 5", "- c: 3", "+ d: 4"]);
    expect(diffLines(null, null)).toEqual([]);
  });
});
