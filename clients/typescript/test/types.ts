// Compile-time checks of the typed-event generics (`npm run typecheck`).
import { TidingsClient, TidingsError, type EventOf } from "../src/index.js";

type OrderEvents = {
  "orders.placed": { id: number; total: number };
  "orders.paid": { id: number; method: "card" | "invoice" };
};

const client = new TidingsClient("http://127.0.0.1:7700", { token: () => "t" });

client.subscribe<OrderEvents>("orders.>", (e) => {
  if (e.name === "orders.placed") {
    const total: number = e.data.total;
    void total;
    // @ts-expect-error: placed events have no method
    void e.data.method;
  } else {
    const method: "card" | "invoice" = e.data.method;
    void method;
  }
});

client.consumer<OrderEvents>("mailer", ["orders.paid"], async (e: EventOf<OrderEvents>) => {
  void e.seq;
});

async function history() {
  for await (const page of client.history<OrderEvents>("orders.>")) {
    for (const e of page.events) {
      const name: "orders.placed" | "orders.paid" = e.name;
      void name;
    }
  }
  try {
    await client.publish("orders.placed", { id: 1, total: 2 }, { key: "k", expectLast: 3 });
  } catch (e) {
    if (e instanceof TidingsError) {
      const s: number = e.status;
      const c: string = e.code;
      void s;
      void c;
    }
  }
}
void history;
