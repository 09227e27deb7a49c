// The catalog page: the progress of unfinished ingestion jobs, live (GET /jobs/<id>, every second).

async function follow(row) {
  const id = row.dataset.job;
  while (row.dataset.finished !== "true") {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const reply = await fetch(`/jobs/${id}`, { credentials: "same-origin" });
    if (!reply.ok) return;
    const job = await reply.json();
    row.querySelector("progress").value = job.done + job.failed;
    row.querySelector("progress").max = job.total || 1;
    row.querySelector(".done").textContent = `${job.done} / ${job.total}`;
    row.querySelector(".failed").textContent = String(job.failed);
    row.querySelector(".embedded").textContent = String(job.embedded);
    row.querySelector(".unchanged").textContent = String(job.unchanged);
    row.querySelector(".state").textContent = job.finished ? "finished" : "running";
    row.dataset.finished = String(job.finished);
  }
}

document.querySelectorAll("#jobs tr[data-job]").forEach((row) => follow(row));
