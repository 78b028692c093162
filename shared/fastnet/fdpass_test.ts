import { assert, assertEquals } from "../testing/assert.ts";
import { FdReceiver, FdSender } from "./fdpass.ts";
import { openFastNet } from "./net.ts";

Deno.test({
  name: "fdpass: a TCP connection sent over a Unix socket is served by the receiver's copy",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    if (Deno.build.os !== "linux") return;
    const net = openFastNet();
    if (typeof net === "string") throw new Error(net);
    const dir = await Deno.makeTempDir();
    const channel = net.listen({ path: `${dir}/h.sock` });
    const tcp = net.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const [out, inn] = await Promise.all([
        net.connect({ path: `${dir}/h.sock` }),
        channel.accept(),
      ]);
      const sender = new FdSender(net.libc, out.release());
      const got: number[] = [];
      let ended = false;
      const arrived = Promise.withResolvers<void>();
      const receiver = new FdReceiver(net.libc, net.reactor, inn.release(), (fd) => {
        got.push(fd);
        arrived.resolve();
      }, () => ended = true);

      const port = (tcp.addr as Deno.NetAddr).port;
      const [client, served] = await Promise.all([
        net.connect({ hostname: "127.0.0.1", port }),
        tcp.accept(),
      ]);
      assertEquals(sender.send(served.fd), "sent");
      served.close(); // this process's copy: the connection stays open in the receiver's
      await arrived.promise;
      assertEquals(got.length, 1);
      const adopted = net.adopt(got[0]!, false);
      await client.write(new TextEncoder().encode("ping"));
      const buf = new Uint8Array(16);
      const n = await adopted.read(buf);
      assertEquals(new TextDecoder().decode(buf.subarray(0, n!)), "ping");
      await adopted.write(new TextEncoder().encode("pong"));
      const m = await client.read(buf);
      assertEquals(new TextDecoder().decode(buf.subarray(0, m!)), "pong");
      adopted.close();
      assertEquals(await client.read(buf), null);
      client.close();

      // The sender going away ends the receiver; a receiver gone makes sends fail.
      sender.close();
      await new Promise((r) => setTimeout(r, 50));
      assert(ended, "the receiver did not see the end");
      receiver.close();
    } finally {
      channel.close();
      tcp.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
