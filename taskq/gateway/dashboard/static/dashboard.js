// taskq dashboard: live run events and group progress over server-sent events.
// Plain JS, no build step. Streams are same-origin and carry the session cookie.
"use strict";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

function liveRun(section) {
  const list = document.getElementById("events");
  const badge = document.getElementById("run-status");
  const source = new EventSource(section.dataset.events);
  source.onmessage = (msg) => {
    const event = JSON.parse(msg.data);
    const item = document.createElement("li");
    if (event.type === "task_run.state") {
      const status = event.run.status;
      item.textContent = `${event.run.modified_at}  status: ${status}`;
      badge.textContent = status;
      badge.className = `status s-${status}`;
      if (TERMINAL.has(status)) {
        source.close();
        // The output, errors and deliveries are on the page once it is drawn again.
        if (section.dataset.active === "true") setTimeout(() => window.location.reload(), 800);
      }
    } else if (event.type === "error") {
      item.textContent = `stream error: ${event.error.message}`;
    } else {
      item.textContent = `${event.timestamp || ""}  ${event.message || event.type}`;
    }
    list.appendChild(item);
  };
}

function liveGroup(section) {
  const bar = document.getElementById("group-bar");
  const message = document.getElementById("group-message");
  let pending = null;
  const refresh = async () => {
    pending = null;
    const response = await fetch(section.dataset.status, { credentials: "same-origin" });
    if (!response.ok) return;
    const status = await response.json();
    message.textContent = status.status_message;
    bar.replaceChildren(...Object.entries(status.task_run_status_counts).map(([name, n]) => {
      const span = document.createElement("span");
      span.className = `s-${name}`;
      span.style.flexGrow = n;
      span.textContent = `${name} ${n}`;
      return span;
    }));
    if (!status.is_active) {
      source.close();
      // Every run has ended: draw the page again for the runs' final statuses.
      setTimeout(() => window.location.reload(), 500);
    }
  };
  const source = new EventSource(section.dataset.events);
  // Many runs may end at once: redraw at most four times a second.
  source.onmessage = () => { if (!pending) pending = setTimeout(refresh, 250); };
}

document.addEventListener("DOMContentLoaded", () => {
  const run = document.getElementById("run");
  // A finished run's history is streamed once too; the stream is closed at its end.
  if (run) liveRun(run);
  const group = document.getElementById("group");
  if (group && group.dataset.active === "true") liveGroup(group);
});
